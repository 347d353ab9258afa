"""RASR's feature-scorer calls on one config, as a script: the process a fault-table case runs.

    python tests/rasr_scorer_replay.py PYMOD_CONFIG INPUT_DIM OUTPUT_DIM

Module init, init, get_feature_buffer_size, reset(num_frames=0), two segments
(add_feature per frame, compute, every get_scores, reset), exit: keyword
arguments only, as RASR calls them. Prints ``replay: ok`` and exits 0 when all
went through. When a call raises, it prints one line ``replay-error: {json}``
(the call, the exception's module, type and message, and whether it is a
SprintifaceError) to stderr and lets the exception end the process, as it ends
RASR (traceback, return code 1).
"""
import json
import os
import sys

import numpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sprintiface


def replay(config: str, input_dim: int, output_dim: int, call: list) -> None:
    call[0] = "module init"
    scorer = sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=object(),
                              callback=lambda *args: None, version_number=5, config=config)
    if scorer is None:
        raise RuntimeError("init() returned None, which RASR treats as a fatal error")
    call[0] = "init"
    scorer.init(input_dim=input_dim, output_dim=output_dim)
    call[0] = "get_feature_buffer_size"
    size = scorer.get_feature_buffer_size()
    call[0] = "reset"
    scorer.reset(num_frames=0)
    rng = numpy.random.default_rng(0)
    for length in (20, 7):
        if size > 0:
            length = min(length, size)
        frames = rng.standard_normal((length, input_dim)).astype(numpy.float32)
        call[0] = "add_feature"
        for t in range(length):
            scorer.add_feature(feature=numpy.array(frames[t]), time=t)
        call[0] = "compute"
        scorer.compute(num_frames=length)
        call[0] = "get_scores"
        for t in range(length):
            numpy.array(scorer.get_scores(time=t))
        call[0] = "reset"
        scorer.reset(num_frames=length)
    call[0] = "exit"
    scorer.exit()


def main(argv) -> int:
    config, input_dim, output_dim = argv[1], int(argv[2]), int(argv[3])
    call = ["start"]
    try:
        replay(config, input_dim, output_dim, call)
    except BaseException as error:
        print("replay-error: " + json.dumps({
            "call": call[0], "module": type(error).__module__, "type": type(error).__name__,
            "library_error": isinstance(error, sprintiface.SprintifaceError), "message": str(error)}),
            file=sys.stderr, flush=True)
        raise
    print("replay: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
