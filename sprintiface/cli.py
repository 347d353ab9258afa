"""Command line: ``python -m sprintiface <command>`` (also the ``sprintiface`` script).

Commands: demo, check-model, prepare, score, estimate-prior, dummy-mixtures, info, config-table.
Errors of sprintiface's kinds print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from sprintiface.errors import FeatureError, SprintifaceError


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
        from sprintiface.demos import run_torch_training_demo

        run_torch_training_demo(directory=args.directory, num_epochs=args.epochs, seed=args.seed)
    elif args.trainer:
        from sprintiface.demos import run_training_demo

        run_training_demo()
    else:
        from sprintiface.demos import run_scorer_demo

        run_scorer_demo(num_segments=args.segments, num_frames=args.frames, seed=args.seed)
    return 0


def _engine(model: str, output_kind: str):
    """The engine for ``model``, built as the scorer builds it (from a config)."""
    from sprintiface.config import load_config
    from sprintiface.engine import OnnxEngine

    return OnnxEngine.from_config(load_config(None, onnx=model, output_kind=output_kind))


def _check_model(args) -> int:
    """Describe the model, then score a segment through the scorer's own calls: the
    command fails exactly when the scorer would."""
    import numpy

    import sprintiface
    from sprintiface.errors import ModelError
    from sprintiface.rasr_calls import rasr_scorer_calls

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
    if info.cut:
        cut = "bias Add and " if info.logit_bias is not None else ""
        print(f"  the final {cut}{info.output_op} are applied by sprintiface in place (served tensor "
              f"{info.served_output!r})")
    input_dim = args.input_dim or engine.input_dim
    if input_dim is None:
        raise ModelError(f"ONNX model {args.model!r}: its feature axis is dynamic "
                         f"({info.feature_input.describe()}); give RASR's feature-dimension as --input-dim")
    engine.check_dims(input_dim, args.output_dim or engine.output_dim)
    output_dim = args.output_dim or engine.output_dim
    config = f"onnx:{args.model},log_level:warning"
    if args.output_kind != "auto":
        config += f",output_kind:{args.output_kind}"
    if args.prior:
        config += f",prior_file:{args.prior},prior_scale:0.7" + (",prior_space:prob" if args.prior_space == "prob"
                                                                 else "")
    frames = numpy.random.default_rng(0).standard_normal((CHECK_FRAMES, input_dim)).astype(numpy.float32)
    for _, scores in rasr_scorer_calls(sprintiface, config, [frames], input_dim, output_dim):
        print(f"scored {scores.shape[0]} frames through RASR's calls: -log scores "
              f"{scores.min():.3f} .. {scores.max():.3f}")
    print("RASR settings:")
    print(f"  feature-dimension                      = {input_dim}")
    print(f"  python-feature-scorer-output-dimension = {output_dim}")
    print("  pymod-name                             = sprintiface")
    print(f"  pymod-config                           = {config.replace(',log_level:warning', '')}")
    return 0


#: Frames of the segment check-model scores (not the warm-up's length, so that a
#: length baked into the graph shows).
CHECK_FRAMES = 37


def _score(args) -> int:
    import numpy

    import sprintiface
    from sprintiface._files import atomic_write
    from sprintiface.feature_files import count_segments, read_segments
    from sprintiface.rasr_calls import rasr_scorer_calls

    names: List[str] = []

    def segments():
        for name, frames in read_segments(args.features):
            names.append(name)
            yield frames

    first = next(read_segments(args.features), (None, None))[1]
    if first is None:
        raise FeatureError(f"feature file {args.features!r} holds no segments")
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


def _prepare(args) -> int:
    from sprintiface.prepare import prepare_model

    prepared = prepare_model(args.model, args.output, plain=args.plain, quantize=args.quantize,
                             sample_features=args.features, input_name=args.input_name,
                             output_name=args.output_name, length_name=args.length_name,
                             output_kind=args.output_kind, keep_slower=args.keep_slower,
                             min_speedup=args.min_speedup, min_agreement=args.min_agreement,
                             quantize_variants=args.variants)
    info = prepared.interface
    report = prepared.quantization
    weights = "" if report is None else f", int8 weights ({report.chosen})" if report.chosen else \
        ", float32 weights: int8 did not pay"
    print(f"prepared {args.model} -> {prepared.path} ({prepared.form}{weights}): "
          f"serves {info.served_output!r} as {info.served_kind} "
          f"for output kind {info.output_kind}"
          f"{' (final ' + str(info.output_op) + ' applied by sprintiface)' if info.cut else ''}")
    for path in prepared.files:
        # the sizes as written: a concurrent prepare of the same output may have replaced the files
        print(f"  {path}: {prepared.sizes[path] / 2**20:.1f} MiB")
    if prepared.packed_for:
        target = prepared.packed_for
        print(f"  weights pre-packed for onnxruntime {target['onnxruntime']} on {target['machine']} "
              f"({' '.join(target['cpu']) or 'no vector extensions'}); prepare once per CPU type")
    if report is not None:
        from sprintiface.quantize import report_lines

        print("\n".join(report_lines(report)))
    print(f"use it with pymod-config onnx:{prepared.path} (keep the files together)")
    return 0


def _dummy_mixtures(args) -> int:
    from sprintiface.mixtures import write_dummy_mixtures

    write_dummy_mixtures(args.output, args.classes, args.dim)
    print(f"wrote a dummy mixture set ({args.classes} mixtures, dimension {args.dim}) to {args.output}: "
          f"set acoustic-model.mixture-set.file = {args.output}")
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

    from sprintiface.quantize import MIN_AGREEMENT, MIN_SPEEDUP, VARIANT_NAMES  # numpy only: the parser stays cheap

    prepare = commands.add_parser(
        "prepare", help="prepare a model once: it then loads with onnxruntime alone and shares its weights")
    prepare.add_argument("model", help="the ONNX model to prepare")
    prepare.add_argument("-o", "--output", required=True, help="the prepared model to write")
    prepare.add_argument("--plain", action="store_true",
                         help="one self-contained file instead of the shareable form (model + pre-packed weights)")
    prepare.add_argument("--quantize", action="store_true",
                         help="measure int8 variants (dynamic: all ops, constant-weight MatMuls only, per op type; "
                              "static, calibrated on --features) against float32 and write the fastest that pays; "
                              "when none does, write the float32 model and say so (exit 0)")
    prepare.add_argument("--features", help="sample features for --quantize to measure and calibrate on (.npy, .npz, "
                                            "HDF5; default: random normal frames, and no static variants)")
    prepare.add_argument("--min-speedup", type=float, default=MIN_SPEEDUP, metavar="X",
                         help="--quantize: an int8 variant pays when it is at least X times as fast as float32 "
                              "(default: %(default)s)")
    prepare.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, metavar="SHARE",
                         help="--quantize: ... and its best class agrees with float32's on at least this share of "
                              "frames (default: %(default)s)")
    prepare.add_argument("--variants", nargs="+", choices=VARIANT_NAMES, metavar="NAME",
                         help="--quantize: measure only these variants (default: every one the model has nodes for: "
                              + ", ".join(VARIANT_NAMES) + ")")
    prepare.add_argument("--keep-slower", action="store_true",
                         help="--quantize: write the best int8 variant even when none pays (default: off, the "
                              "float32 model is written)")
    prepare.add_argument("--input-name")
    prepare.add_argument("--output-name")
    prepare.add_argument("--length-name")
    prepare.add_argument("--output-kind", choices=kinds, default="auto")
    prepare.set_defaults(run=_prepare)

    mixtures = commands.add_parser(
        "dummy-mixtures", help="write the mixture-set file RASR's acoustic model reads even for a Python scorer")
    mixtures.add_argument("--classes", type=int, required=True,
                          help="emission classes (= python-feature-scorer-output-dimension)")
    mixtures.add_argument("--dim", type=int, required=True, help="features per frame (= feature-dimension)")
    mixtures.add_argument("-o", "--output", required=True, help="the file to write, e.g. dummy.mix")
    mixtures.set_defaults(run=_dummy_mixtures)

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
