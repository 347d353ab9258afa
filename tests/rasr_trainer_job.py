"""An nn-trainer job as RASR drives sprintiface's PythonTrainer, run as its own process
by the fault tests (tests/test_trainer_faults.py).

    python rasr_trainer_job.py CONFIG [--segments N] [--frames T] [--end exit|no-exit|wait]
                               [--ready-after K] [--file-size-limit BYTES]

Calls init (keyword arguments, target-alignment, inputDim 40), then one
feedInputAndTargetAlignment per segment with RASR's Fortran float32 features
(the same buffer refilled every time, as RASR does), then, by ``--end``:
``exit`` calls exit(); ``no-exit`` just ends (Python's atexit runs, RASR's
exit() never came); ``wait`` prints ``ready`` after ``--ready-after`` segments
and sleeps, for a signal. ``--file-size-limit`` sets RLIMIT_FSIZE with SIGXFSZ
ignored (as embedded Python ignores it), so a write beyond it fails with EFBIG.
Prints ``fed <i>`` after every segment.
"""
import argparse
import resource
import signal
import sys
import time

import numpy

import sprintiface

INPUT_DIM, OUTPUT_DIM = 40, 9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--end", choices=("exit", "no-exit", "wait"), default="exit")
    parser.add_argument("--ready-after", type=int, default=5)
    parser.add_argument("--file-size-limit", type=int)
    args = parser.parse_args()
    if args.file_size_limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.file_size_limit, args.file_size_limit))

    features = numpy.asfortranarray(numpy.zeros((INPUT_DIM, args.frames), numpy.float32))
    alignment = numpy.zeros(args.frames, numpy.uint32)
    for index in range(args.segments):
        if index == 0:
            sprintiface.init(inputDim=INPUT_DIM, outputDim=OUTPUT_DIM, allowDownsampling=0, config=args.config,
                             targetMode="target-alignment", cudaEnabled=0, cudaActiveGpu=-1)
        features[:] = index
        alignment[:] = index % OUTPUT_DIM
        sprintiface.feedInputAndTargetAlignment(features=features, targetAlignment=alignment, weights=None,
                                                segmentName=f"corpus/s{index}")
        print(f"fed {index}", flush=True)
        if args.end == "wait" and index + 1 == args.ready_after:
            print("ready", flush=True)
            time.sleep(120)
    if args.end == "exit":
        sprintiface.exit()


if __name__ == "__main__":
    sys.exit(main())
