"""Command line: ``python -m sprintiface <command>`` (also the ``sprintiface`` script).

Commands: demo, check-model, prepare, score, estimate-prior, dummy-mixtures, info, config-table.
Errors print one line, `sprintiface: error: ...` (see main()); `sprintiface COMMAND --help` is each
command's reference.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from sprintiface.errors import FeatureError, ModelError, SprintifaceError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy

    from sprintiface.engine import OnnxEngine


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


def _demo(args: argparse.Namespace) -> int:
    if args.train:
        from sprintiface.demos import run_torch_training_demo

        run_torch_training_demo(directory=args.directory, num_epochs=args.epochs or DEMO_DEFAULTS["epochs"],
                                seed=args.seed)
    elif args.trainer:
        from sprintiface.demos import run_training_demo

        run_training_demo(seed=args.seed)
    else:
        from sprintiface.demos import run_scorer_demo

        run_scorer_demo(num_segments=DEMO_DEFAULTS["segments"] if args.segments is None else args.segments,
                        num_frames=DEMO_DEFAULTS["frames"] if args.frames is None else args.frames, seed=args.seed)
    return 0


def _engine(model: str, output_kind: str) -> OnnxEngine:
    """The engine for ``model``, built as the scorer builds it (from a config)."""
    from sprintiface.config import load_config
    from sprintiface.engine import OnnxEngine

    return OnnxEngine.from_config(load_config(None, onnx=model, output_kind=output_kind))


def _classes(engine: OnnxEngine, model: str, given: Optional[int] = None) -> int:
    """RASR's output dimension: ``given``, else the model's number of classes."""
    classes = given or engine.output_dim
    if classes is None:
        raise ModelError(f"ONNX model {model!r}: its number of classes is unknown after a warm-up run; "
                         f"give RASR's python-feature-scorer-output-dimension as --output-dim")
    return classes


def _check_model(args: argparse.Namespace) -> int:
    """Describe the model, then score a segment through the scorer's own calls: the
    command fails exactly when the scorer would."""
    import numpy

    import sprintiface
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
    engine.bind_input_dim(input_dim)  # a dynamic feature axis is fixed here and the classes learnt
    output_dim = _classes(engine, args.model, args.output_dim)
    engine.check_dims(input_dim, output_dim)
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


def _score(args: argparse.Namespace) -> int:
    import numpy

    import sprintiface
    from sprintiface._files import atomic_write
    from sprintiface.feature_files import count_segments, read_segments
    from sprintiface.rasr_calls import rasr_scorer_calls

    names: list[str] = []

    def segments() -> Iterator[numpy.ndarray]:
        for name, frames in read_segments(args.features):
            names.append(name)
            yield frames

    first = next(read_segments(args.features), (None, None))[1]
    if first is None:
        raise FeatureError(f"feature file {args.features!r} holds no segments")
    config = f"onnx:{args.model},log_level:warning,buffer_size:{args.buffer_size},output_kind:{args.output_kind}"
    if args.prior:
        config += (f",prior_file:{args.prior},prior_scale:{1.0 if args.prior_scale is None else args.prior_scale},"
                   f"prior_space:{args.prior_space or 'log'}")
    engine = _engine(args.model, args.output_kind)
    engine.bind_input_dim(first.shape[1])
    output_dim = _classes(engine, args.model)
    engine.check_dims(first.shape[1], output_dim)
    output = args.output or args.features.rsplit(".", 1)[0] + ".scores.npz"
    progress = Progress(count_segments(args.features), "scoring", args.progress or None)
    calls = rasr_scorer_calls(sprintiface, config, segments(), first.shape[1], output_dim)
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


def _estimate_prior(args: argparse.Namespace) -> int:
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


def _info(args: argparse.Namespace) -> int:
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


def _prepare(args: argparse.Namespace) -> int:
    from sprintiface.prepare import prepare_model
    from sprintiface.quantize import MIN_AGREEMENT, MIN_SPEEDUP

    prepared = prepare_model(args.model, args.output, plain=args.plain, quantize=args.quantize,
                             sample_features=args.features, input_name=args.input_name,
                             output_name=args.output_name, length_name=args.length_name,
                             output_kind=args.output_kind, keep_slower=bool(args.keep_slower),
                             min_speedup=MIN_SPEEDUP if args.min_speedup is None else args.min_speedup,
                             min_agreement=MIN_AGREEMENT if args.min_agreement is None else args.min_agreement,
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
        flags = target["cpu"]
        cpu = " ".join(str(flag) for flag in flags) if isinstance(flags, (list, tuple)) else str(flags)
        print(f"  weights pre-packed for onnxruntime {target['onnxruntime']} on {target['machine']} "
              f"({cpu or 'no vector extensions'}); prepare once per CPU type")
    if report is not None:
        from sprintiface.quantize import report_lines

        print("\n".join(report_lines(report)))
    print(f"use it with pymod-config onnx:{prepared.path} (keep the files together)")
    return 0


def _dummy_mixtures(args: argparse.Namespace) -> int:
    from sprintiface.mixtures import write_dummy_mixtures

    write_dummy_mixtures(args.output, args.classes, args.dim)
    print(f"wrote a dummy mixture set ({args.classes} mixtures, dimension {args.dim}) to {args.output}: "
          f"set acoustic-model.mixture-set.file = {args.output}")
    return 0


def _config_table(args: argparse.Namespace) -> int:
    from sprintiface.config import options_table

    print(options_table(), end="")
    return 0


#: Defaults of the options that only apply with another one: argparse keeps None, so that
#: an option given where it does not apply can be told from one left out (and refused).
DEMO_DEFAULTS = {"segments": 3, "frames": 500, "epochs": 4}


#: What add_subparsers() returns (argparse's own class: it has no public name).
_Commands = argparse._SubParsersAction  # the annotations below read _Commands[ArgumentParser]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Options with their defaults (an option without a default shows none); descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text or "default:" in text:
            return text
        return text + " (default: %(default)s)"


def _command(commands: _Commands[argparse.ArgumentParser], name: str, summary: str,
             description: str = "") -> argparse.ArgumentParser:
    """A subcommand: ``summary`` is its line in ``sprintiface --help``, ``description`` the rest of its own."""
    text = f"{summary[0].upper()}{summary[1:]}." + (f"\n\n{description}" if description else "")
    # Each line of the description a paragraph of its own, wrapped (the raw formatter wraps none).
    wrapped = "\n".join(textwrap.fill(line, 79) if line else "" for line in text.splitlines())
    parser: argparse.ArgumentParser = commands.add_parser(name, help=summary, description=wrapped,
                                                          formatter_class=_HelpFormatter)
    return parser


def _output_kind_option(parser: argparse.ArgumentParser) -> None:
    from sprintiface.scores import OUTPUT_KINDS

    parser.add_argument("--output-kind", choices=("auto", *OUTPUT_KINDS), default="auto",
                        help="what the model's output holds (config key output_kind); auto reads it from the "
                             "node that makes it")


def _prior_space_option(parser: argparse.ArgumentParser) -> None:
    from sprintiface.config import OPTIONS

    option = OPTIONS["prior_space"]
    parser.add_argument("--prior-space", choices=option.choices,
                        help=f"what --prior holds: log p(s) or p(s) (config key prior_space; default: "
                             f"{option.default}; with --prior only)")


def _add_demo(commands: _Commands[argparse.ArgumentParser]) -> None:
    demo = _command(commands, "demo", "replay RASR's calls on the model shipped in the package",
                    "Without options: the feature scorer's calls on synthetic segments, with the real-time "
                    "factor.\n--trainer: a RASR training run (segment list over 2 epochs) into the dump trainer.\n"
                    "--train: train a PyTorch model through RASR's trainer calls (trainer:torch), then score "
                    "held-out data with every epoch's ONNX export (needs sprintiface[torch]).")
    mode = demo.add_mutually_exclusive_group()
    mode.add_argument("--trainer", action="store_true", help="replay a RASR training run into the dump trainer")
    mode.add_argument("--train", action="store_true", help="train with trainer:torch, then recognise")
    demo.add_argument("--segments", type=int, help=f"segments to score (default: {DEMO_DEFAULTS['segments']}; "
                                                   f"the scorer demo only)")
    demo.add_argument("--frames", type=int, help=f"frames per segment (default: {DEMO_DEFAULTS['frames']}; the "
                                                 f"scorer demo only)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    demo.add_argument("--epochs", type=int, help=f"epochs to train (default: {DEMO_DEFAULTS['epochs']}; with "
                                                 f"--train only)")
    demo.add_argument("--directory", help="where --train writes its model file, checkpoints and exports, and "
                                          "keeps them (default: a temporary folder, removed at the end; with "
                                          "--train only)")
    demo.set_defaults(run=_demo, check=_check_demo)


def _add_check_model(commands: _Commands[argparse.ArgumentParser]) -> None:
    check = _command(commands, "check-model", "what a model takes and gives, and the RASR settings it needs",
                     "Describes the model's inputs and outputs, then scores a segment of random frames through "
                     "the scorer's own calls: the command fails exactly where RASR's job would.")
    check.add_argument("model", help="the ONNX model (plain or prepared)")
    check.add_argument("--input-dim", type=int, help="RASR's feature-dimension, checked against the model "
                                                     "(default: the model's, when it is fixed)")
    check.add_argument("--output-dim", type=int, help="RASR's python-feature-scorer-output-dimension, checked "
                                                      "against the model (default: the model's)")
    check.add_argument("--prior", help="prior file, checked for the model's number of classes")
    _prior_space_option(check)
    _output_kind_option(check)
    check.set_defaults(run=_check_model, check=_needs_prior)


def _add_score(commands: _Commands[argparse.ArgumentParser]) -> None:
    score = _command(commands, "score", "score a feature file through RASR's call sequence",
                     "Each segment goes through the calls RASR's PythonFeatureScorer makes (init, add_feature "
                     "per frame, compute, get_scores per frame, reset); the -log scores are written one array "
                     "per segment.")
    score.add_argument("model", help="the ONNX model (plain or prepared)")
    score.add_argument("features", help=".npy (T, F), .npz (one array per segment) or RETURNN-layout HDF5")
    score.add_argument("-o", "--output", help=".npz (one array per segment, named as in the features) or .npy for "
                                              "one segment (default: <features>.scores.npz)")
    score.add_argument("--prior", help="prior file (config key prior_file)")
    score.add_argument("--prior-scale", type=float, help="scale of the prior (default: 1.0; with --prior only)")
    _prior_space_option(score)
    score.add_argument("--buffer-size", type=int, default=-1,
                       help="what get_feature_buffer_size() reports (config key buffer_size): -1 scores whole "
                            "segments, which every RASR program can use; N > 0 sends each segment in buffers of N "
                            "frames, as a RASR that flushed chunks would (today's RASR aborts at frame N+1 "
                            "instead, see docs/recognition.md)")
    _output_kind_option(score)
    score.add_argument("--progress", action="store_true", help="a progress bar even when stderr is no terminal")
    score.set_defaults(run=_score, check=_needs_prior)


def _add_estimate_prior(commands: _Commands[argparse.ArgumentParser]) -> None:
    prior = _command(commands, "estimate-prior", "average posteriors over a feature set into a prior",
                     "log p(s) is the mean of the model's posteriors over every frame, streamed one segment "
                     "at a time; written in +log space.")
    prior.add_argument("model", help="the ONNX model (plain or prepared)")
    prior.add_argument("features", help=".npy (T, F), .npz (one array per segment) or RETURNN-layout HDF5")
    prior.add_argument("-o", "--output", required=True, help="the prior to write: .txt (RETURNN), .xml (RASR) "
                                                             "or .npy")
    prior.add_argument("--all-formats", action="store_true", help="write .txt, .xml and .npy next to each other, "
                                                                  "named after --output")
    _output_kind_option(prior)
    prior.add_argument("--progress", action="store_true", help="a progress bar even when stderr is no terminal")
    prior.set_defaults(run=_estimate_prior)


def _add_info(commands: _Commands[argparse.ArgumentParser]) -> None:
    info = _command(commands, "info", "versions, ONNX Runtime providers, threads, score kernel")
    info.set_defaults(run=_info)


def _add_prepare(commands: _Commands[argparse.ArgumentParser]) -> None:
    from sprintiface.quantize import MIN_AGREEMENT, MIN_SPEEDUP, VARIANT_NAMES  # numpy only: the parser stays cheap

    prepare = _command(commands, "prepare", "prepare a model once: it then loads with onnxruntime alone and "
                                            "shares its weights",
                       "The prepared model records the scorer's plan (inputs, output, output kind) and, unless "
                       "--plain, keeps ONNX Runtime's pre-packed weights in a file next to it that the processes "
                       "of a node map and share. Pre-packed weights are for this CPU type: prepare once per type.")
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
    # Defaults None, applied in _prepare: so that one given without --quantize is seen and refused.
    prepare.add_argument("--min-speedup", type=float, metavar="X",
                         help="--quantize: an int8 variant pays when it is at least X times as fast as float32 "
                              f"(default: {MIN_SPEEDUP})")
    prepare.add_argument("--min-agreement", type=float, metavar="SHARE",
                         help="--quantize: ... and its best class agrees with float32's on at least this share of "
                              f"frames (default: {MIN_AGREEMENT})")
    prepare.add_argument("--variants", nargs="+", choices=VARIANT_NAMES, metavar="NAME",
                         help="--quantize: measure only these variants (default: every one the model has nodes for: "
                              + ", ".join(VARIANT_NAMES) + ")")
    prepare.add_argument("--keep-slower", action="store_true", default=None,
                         help="--quantize: write the best int8 variant even when none pays (default: off, the "
                              "float32 model is written)")
    prepare.add_argument("--input-name", help="the feature input (config key input_name; default: detected)")
    prepare.add_argument("--output-name", help="the scores' output (config key output_name; default: detected)")
    prepare.add_argument("--length-name", help="the sequence-length input (config key length_name; default: "
                                               "detected)")
    _output_kind_option(prepare)
    prepare.set_defaults(run=_prepare, check=_check_prepare)


def _add_dummy_mixtures(commands: _Commands[argparse.ArgumentParser]) -> None:
    mixtures = _command(commands, "dummy-mixtures", "write the mixture-set file RASR's acoustic model reads even "
                                                    "for a Python scorer",
                        "RASR opens acoustic-model.mixture-set.file before it builds any feature scorer; with "
                        "python-feature-scorer-output-dimension set, its contents are never used.")
    mixtures.add_argument("--classes", type=int, required=True,
                          help="emission classes (= python-feature-scorer-output-dimension)")
    mixtures.add_argument("--dim", type=int, required=True, help="features per frame (= feature-dimension)")
    mixtures.add_argument("-o", "--output", required=True, help="the file to write, e.g. dummy.mix")
    mixtures.set_defaults(run=_dummy_mixtures)


def _add_config_table(commands: _Commands[argparse.ArgumentParser]) -> None:
    table = _command(commands, "config-table", "print the table of config keys (docs/configuration.md)")
    table.set_defaults(run=_config_table)


def build_parser() -> argparse.ArgumentParser:
    """The ``sprintiface`` parser: one subcommand per ``_add_*`` function."""
    from sprintiface._version import __version__

    parser = argparse.ArgumentParser(prog="sprintiface", description="sprintiface: RASR's Python module on "
                                     "ONNX Runtime. `sprintiface COMMAND --help` describes each command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="on an unexpected error, show Python's traceback instead of one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_check_model, _add_score, _add_estimate_prior, _add_info, _add_prepare,
                _add_dummy_mixtures, _add_config_table):
        add(commands)
    return parser


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The subparser of command ``name`` (for its usage line in an error)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise LookupError(name)


# -- options that need another option ---------------------------------------------------

def _refuse_without(given: dict[str, Any], needs: str, names: Sequence[str]) -> Optional[str]:
    """The message for options in ``names`` given (not None) without ``needs``, or None."""
    stray = [f"--{name.replace('_', '-')}" for name in names if given.get(name) is not None]
    return f"{', '.join(stray)} only with {needs}" if stray else None


def _check_demo(args: argparse.Namespace) -> Optional[str]:
    given = vars(args)
    if args.train:
        return _refuse_without(given, "the scorer demo (no --train)", ("segments", "frames"))
    if args.trainer:
        return _refuse_without(given, "--train", ("epochs", "directory")) or \
            _refuse_without(given, "the scorer demo (no --trainer)", ("segments", "frames"))
    return _refuse_without(given, "--train", ("epochs", "directory"))


def _needs_prior(args: argparse.Namespace) -> Optional[str]:
    return None if args.prior else _refuse_without(vars(args), "--prior", ("prior_scale", "prior_space"))


def _check_prepare(args: argparse.Namespace) -> Optional[str]:
    return None if args.quantize else _refuse_without(
        vars(args), "--quantize", ("features", "min_speedup", "min_agreement", "variants", "keep_slower"))


def main(argv: Optional[list[str]] = None) -> int:
    """Run the command line; returns the exit status.

    Usage errors (and an option given without the one it needs) exit with 2 as
    argparse's do. Errors of sprintiface's kinds print one line,
    ``sprintiface: error: <kind>: <message>``, and exit with 2; a file that
    cannot be read or written with 1; anything else (a bug) with 1 and one
    line unless ``--traceback``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    refused = check(args) if check is not None else None
    if refused:
        _subcommand(parser, args.command).error(refused)  # exits with 2, as for any usage error
    try:
        status: int = args.run(args)
        return status
    except SprintifaceError as error:
        print(f"sprintiface: error: {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"sprintiface: error: {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sprintiface: error: {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.traceback:
            raise
        print(f"sprintiface: error: {args.command}: unexpected {type(error).__name__}: {error} (a bug in "
              f"sprintiface; run with sprintiface --traceback {args.command} ... for the traceback)",
              file=sys.stderr)
        return 1
