"""Command line: ``python -m sprintiface <command>`` (also the ``sprintiface`` script).

Commands: demo, check-model, score, estimate-prior, info, config-table.
Errors of sprintiface's kinds print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from sprintiface.errors import SprintifaceError


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or when asked)."""

    def __init__(self, total: int, label: str, enabled: Optional[bool] = None):
        self.total, self.label, self.done = max(total, 1), label, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self) -> None:
        self.done += 1
        if self.enabled:
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _demo(args) -> int:
    if args.train:
        from sprintiface.replay import run_torch_training_demo

        run_torch_training_demo(directory=args.directory, num_epochs=args.epochs, seed=args.seed)
    elif args.trainer:
        from sprintiface.replay import run_training_demo

        run_training_demo()
    else:
        from sprintiface.replay import run_scorer_demo

        run_scorer_demo(num_segments=args.segments, num_frames=args.frames, seed=args.seed)
    return 0


def _engine(model: str, output_kind: str):
    """The engine for ``model``, built as the scorer builds it (from a config)."""
    from sprintiface.config import load_config
    from sprintiface.engine import OnnxEngine

    return OnnxEngine.from_config(load_config(None, onnx=model, output_kind=output_kind))


def _check_model(args) -> int:
    from sprintiface.priors import load_prior

    engine = _engine(args.model, args.output_kind)
    info = engine.interface
    print(f"model {args.model}")
    for tensor in info.inputs:
        role = "features" if tensor is info.feature_input else "sequence length (fed T)" \
            if tensor is info.length_input else "?"
        print(f"  input  {tensor.describe()}: {role}")
    for tensor in info.outputs:
        print(f"  output {tensor.describe()}{': scores' if tensor is info.output else ''}")
    print(f"output kind: {info.output_kind} (made by {info.output_op or 'no node'})")
    if info.served_output != info.output.name:
        cut = "bias Add and " if info.logit_bias is not None else ""
        print(f"  the final {cut}{info.output_op} are applied by sprintiface in place (served tensor "
              f"{info.served_output!r})")
    input_dim = args.input_dim or engine.input_dim
    if args.input_dim or args.output_dim:
        engine.check_dims(input_dim, args.output_dim or engine.output_dim)
    output_dim = args.output_dim or engine.output_dim
    prior = ""
    if args.prior:
        load_prior(args.prior, space=args.prior_space, num_classes=output_dim)
        prior = f",prior_file:{args.prior},prior_scale:0.7" + (",prior_space:prob" if args.prior_space == "prob" else "")
    kind = "" if info.output_op in ("Softmax", "LogSoftmax") or args.output_kind == "auto" else \
        f",output_kind:{args.output_kind}"
    print("RASR settings:")
    print(f"  feature-dimension                      = {input_dim if input_dim else '<your features dim>'}")
    print(f"  python-feature-scorer-output-dimension = {output_dim if output_dim else '<classes>'}")
    print("  pymod-name                             = sprintiface")
    print(f"  pymod-config                           = onnx:{args.model}{kind}{prior}")
    return 0


def _score(args) -> int:
    import numpy

    import sprintiface
    from sprintiface._files import atomic_write
    from sprintiface.feature_files import count_segments, read_segments
    from sprintiface.replay import rasr_scorer_calls

    names: List[str] = []

    def segments():
        for name, frames in read_segments(args.features):
            names.append(name)
            yield frames

    first = next(read_segments(args.features))[1]
    config = f"onnx:{args.model},log_level:warning,buffer_size:{args.buffer_size},output_kind:{args.output_kind}"
    if args.prior:
        config += f",prior_file:{args.prior},prior_scale:{args.prior_scale},prior_space:{args.prior_space}"
    engine = _engine(args.model, args.output_kind)
    engine.bind_input_dim(first.shape[1])
    engine.check_dims(first.shape[1], engine.output_dim)
    output = args.output or args.features.rsplit(".", 1)[0] + ".scores.npz"
    progress = Progress(count_segments(args.features), "scoring", args.progress or None)
    calls = rasr_scorer_calls(sprintiface, config, segments(), first.shape[1], engine.output_dim)
    if output.endswith(".npy"):
        results = [scores for _, scores in calls]
        if len(results) != 1:
            raise SprintifaceError(f"score: {output} (.npy) holds one segment, the features have {len(results)}; "
                                   f"write .npz")
        with atomic_write(output, "wb") as file:
            numpy.save(file, results[0])
        progress()
    else:
        import zipfile

        with atomic_write(output, "wb") as file, zipfile.ZipFile(file, "w") as archive:
            for index, scores in calls:  # one segment in memory at a time
                with archive.open(f"{names[index]}.npy", "w", force_zip64=True) as member:
                    numpy.lib.format.write_array(member, scores)
                progress()
    print(f"wrote -log scores of {len(names)} segment(s) to {output}")
    return 0


def _estimate_prior(args) -> int:
    import os

    from sprintiface.feature_files import count_segments, read_segments
    from sprintiface.priors import estimate_prior, save_prior

    engine = _engine(args.model, args.output_kind)
    frames = (features for _, features in read_segments(args.features))
    progress = Progress(count_segments(args.features), "estimating prior", args.progress or None)
    log_prior = estimate_prior(engine, frames, progress)
    paths = [args.output]
    if args.all_formats:
        stem = os.path.splitext(args.output)[0]
        paths = [f"{stem}.txt", f"{stem}.xml", f"{stem}.npy"]
    for path in paths:
        save_prior(path, log_prior)
        print(f"wrote log prior ({log_prior.size} classes, +log space) to {path}")
    return 0


def _info(args) -> int:
    import os
    import platform

    import numpy
    import onnxruntime

    import sprintiface
    from sprintiface._buffer import available_score_kernels, best_score_kernel
    from sprintiface.config import OPTIONS

    try:
        import onnx
        onnx_version = onnx.__version__
    except ImportError:
        onnx_version = "not installed"
    print(f"sprintiface {sprintiface.__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}, onnx {onnx_version}")
    print(f"onnxruntime providers: {', '.join(onnxruntime.get_available_providers())} (sprintiface uses CPU)")
    print(f"score kernel: {best_score_kernel()} (this CPU runs: {', '.join(available_score_kernels())})")
    print(f"threads: intra_op_threads={OPTIONS['intra_op_threads'].default}, "
          f"inter_op_threads={OPTIONS['inter_op_threads'].default} unless set in pymod-config; "
          f"{os.cpu_count()} CPUs here")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        print(f"{name}={os.environ.get(name, '(unset)')}")
    return 0


def _config_table(args) -> int:
    from sprintiface.config import options_table

    print(options_table(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sprintiface", description="sprintiface: RASR's Python module on ONNX Runtime")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="replay RASR's scorer protocol on the shipped model "
                                             "(--train: train with trainer:torch and recognise)")
    demo.add_argument("--segments", type=int, default=3, help="segments to score (default 3)")
    demo.add_argument("--frames", type=int, default=500, help="frames per segment (default 500)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic features")
    demo.add_argument("--trainer", action="store_true",
                      help="replay a RASR training run (segment list over 2 epochs, dump trainer) instead")
    demo.add_argument("--train", action="store_true",
                      help="train a PyTorch model through RASR's trainer calls (trainer:torch), then score held-out "
                           "data with every epoch's ONNX export through the scorer (needs sprintiface[torch])")
    demo.add_argument("--epochs", type=int, default=4, help="epochs of --train (default 4)")
    demo.add_argument("--directory", help="where --train writes its model file, checkpoints and exports "
                                          "(default: a new temporary folder)")
    demo.set_defaults(run=_demo)

    from sprintiface.scores import OUTPUT_KINDS

    kinds = ("auto",) + OUTPUT_KINDS
    check = commands.add_parser("check-model", help="what a model takes and gives, and the RASR settings it needs")
    check.add_argument("model")
    check.add_argument("--input-dim", type=int, help="RASR's feature-dimension, checked against the model")
    check.add_argument("--output-dim", type=int, help="RASR's output dimension, checked against the model")
    check.add_argument("--prior", help="prior file, checked for the model's number of classes")
    check.add_argument("--prior-space", choices=("log", "prob"), default="log")
    check.add_argument("--output-kind", choices=kinds, default="auto")
    check.set_defaults(run=_check_model)

    score = commands.add_parser("score", help="score a feature file through RASR's call sequence")
    score.add_argument("model")
    score.add_argument("features", help=".npy (T, F), .npz (one array per segment) or RETURNN-layout HDF5")
    score.add_argument("-o", "--output", help=".npz (default: <features>.scores.npz) or .npy for one segment")
    score.add_argument("--prior")
    score.add_argument("--prior-scale", type=float, default=1.0)
    score.add_argument("--prior-space", choices=("log", "prob"), default="log")
    score.add_argument("--buffer-size", type=int, default=-1, help="chunked mode as in RASR (default -1: whole)")
    score.add_argument("--output-kind", choices=kinds, default="auto")
    score.add_argument("--progress", action="store_true", help="progress bar even when stderr is no terminal")
    score.set_defaults(run=_score)

    prior = commands.add_parser("estimate-prior", help="average posteriors over a feature set into a prior")
    prior.add_argument("model")
    prior.add_argument("features")
    prior.add_argument("-o", "--output", required=True, help=".txt (RETURNN), .xml (RASR) or .npy")
    prior.add_argument("--all-formats", action="store_true", help="write .txt, .xml and .npy next to each other")
    prior.add_argument("--output-kind", choices=kinds, default="auto")
    prior.add_argument("--progress", action="store_true")
    prior.set_defaults(run=_estimate_prior)

    info = commands.add_parser("info", help="versions, ONNX Runtime providers, threads, score kernel")
    info.set_defaults(run=_info)

    table = commands.add_parser("config-table", help="print the table of config keys (docs/configuration.md)")
    table.set_defaults(run=_config_table)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SprintifaceError as error:
        print(f"sprintiface {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
