"""A RASR scorer job in its own process, for tests that rewrite its model file under it.

Usage: python rewrite_victim.py CONFIG INPUT_DIM OUTPUT_DIM FEATURES.npy OUT_PREFIX

Scores the features once (through RASR's calls) and saves OUT_PREFIX0.npy, prints
``ready`` and then, for each line read from stdin, scores them again and saves
OUT_PREFIX<n>.npy and prints ``scored <n>``; ends at end of input. A SIGBUS shows
as the process's signal exit, not as a crash of pytest.
"""
import os
import sys

import numpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import rasr_scorer, score_segment


def main() -> None:
    config, input_dim, output_dim, features, prefix = sys.argv[1:6]
    scorer = rasr_scorer(config, int(input_dim), int(output_dim))
    x = numpy.load(features)
    numpy.save(f"{prefix}0.npy", score_segment(scorer, x))
    print("ready", flush=True)
    for count, _ in enumerate(sys.stdin, start=1):
        numpy.save(f"{prefix}{count}.npy", score_segment(scorer, x))
        print(f"scored {count}", flush=True)
    scorer.exit()


if __name__ == "__main__":
    main()
