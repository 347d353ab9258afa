"""The pymod-config string RASR hands over, an optional TOML config file, and
the table of every key sprintiface reads.

RASR passes ``pymod-config`` verbatim: comma-separated ``key:value`` items,
each split at its first ``:`` (values may contain ``:``), empty items ignored::

    onnx:am.onnx,prior_file:prior.txt,prior_scale:0.7

``configfile:<path>`` names a TOML file with the same keys at top level; a key
given in the string wins over the file. Every key is declared once, in
``OPTIONS``, with its default, its type and what it means; the docs' key table
is checked against it.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Any, Callable, NamedTuple, Optional
from collections.abc import Mapping

from sprintiface._checks import checked_int
from sprintiface.errors import ConfigError
from sprintiface.log import LEVELS, log_level_help
from sprintiface.scores import OUTPUT_KINDS


def _toml() -> types.ModuleType:
    # Imported when a configfile is read, not by every RASR job that starts.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python < 3.11 only
        import tomli as tomllib
    module: types.ModuleType = tomllib
    return module


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _to_int(value: Any) -> int:
    # pymod-config gives text; a TOML file or an override gives a value: an int, never a bool.
    if isinstance(value, str):
        return int(value.strip(), 10)
    return checked_int(value, "the value", error=ValueError)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of true/false/1/0/yes/no")


def _to_buffer_size(value: Any) -> int:
    size = _to_int(value)
    if size == 0 or size < -1:
        raise ValueError("expected -1 (whole segments) or a number of frames > 0 (RASR treats 0 as fatal)")
    return size


SCORE_KERNELS = ("auto", "avx512", "avx2", "baseline")


def _to_score_kernel(value: Any) -> str:
    from sprintiface._buffer import available_score_kernels

    name = _to_str(value).strip()
    if name not in SCORE_KERNELS:
        raise ValueError(f"expected one of {', '.join(SCORE_KERNELS)}")
    if name != "auto" and name not in available_score_kernels():
        raise ValueError(f"this build and CPU run {', '.join(available_score_kernels())}, not {name}")
    return name


def _to_seq_ordering(value: Any) -> str:
    text = str(value).strip()
    if text in ("default", "random", "sorted", "sorted_reverse"):
        return text
    if text.startswith("laplace:"):
        size = text.split(":", 1)[1]
        if size.isdigit() and int(size) > 0:
            return text
    raise ValueError("expected default, random, sorted, sorted_reverse or laplace:N with N > 0")


class Option(NamedTuple):
    """One config key: how its value is parsed and what it means."""

    name: str
    default: Any
    convert: Callable[[Any], Any]
    help: str
    choices: Optional[tuple[str, ...]] = None
    minimum: Optional[float] = None
    is_path: bool = False

    def parse(self, value: Any, origin: str) -> Any:
        """Convert ``value`` (a string from pymod-config or a TOML value)."""
        if self.choices is not None:
            text = str(value).strip()
            if text not in self.choices:
                raise ConfigError(
                    f"config key {self.name!r} ({origin}): expected one of {', '.join(self.choices)}; "
                    f"got {value!r}")
            return text
        try:
            result = self.convert(value)
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"config key {self.name!r} ({origin}): {error}; got {value!r}") from None
        if self.minimum is not None and result < self.minimum:
            raise ConfigError(
                f"config key {self.name!r} ({origin}): expected a value >= {self.minimum:g}; got {value!r}")
        return result


def _options(*options: Option) -> dict[str, Option]:
    return {option.name: option for option in options}


#: Every key sprintiface reads, in the order the docs list them.
OPTIONS: dict[str, Option] = _options(
    # -- what to do
    Option("action", None, _to_str, "What RASR runs: forward (scoring, forwarding), train, or nop "
           "(accept every call, do nothing). Absent means forward for the feature scorer; the trainer "
           "requires it, as RETURNN does.", choices=("forward", "train", "nop")),
    Option("configfile", None, _to_str, "TOML file with more of these keys; keys in pymod-config win.",
           is_path=True),
    Option("log_level", "info", _to_str, log_level_help(), choices=tuple(LEVELS)),
    # -- the model
    Option("onnx", None, _to_str, "Path of the ONNX acoustic model.", is_path=True),
    Option("model", None, _to_str, "RETURNN-style model prefix: with epoch N the model is "
           "<model>.<N:03d>.onnx (e.g. net-model/network.080.onnx). Use this or onnx. For trainer torch "
           "the prefix of what it writes: <model>.<N:03d>.pt and <model>.<N:03d>.onnx.", is_path=True),
    Option("epoch", None, _to_int, "Epoch of the model (with model), and the epoch the trainer "
           "starts from or reports.", minimum=1),
    Option("input_name", None, _to_str, "Name of the feature input ([B, T, F] or [T, F]); "
           "detected when the model has one float input."),
    Option("length_name", None, _to_str, "Name of the sequence-length input ([B] or [], int32/int64), "
           "fed with T. Without it, the one integer input whose name reads as a length (*length*, "
           "*size*, *len, *lens, *frames: RETURNN's data:size1, RASR's features-size, lengths, seq_len) "
           "is fed T; any other integer input is refused (docs/models.md)."),
    Option("output_name", None, _to_str, "Name of the output ([B, T, C] or [T, C]); detected "
           "when the model has one float output of rank 2 or 3."),
    Option("output_kind", "auto", _to_str, "What the output holds: probs (softmax posteriors), "
           "log_probs, logits (log-softmax is applied) or scores (-log space, used as is). auto reads "
           "it from the node that makes the output (Softmax, LogSoftmax) and asks otherwise.",
           choices=("auto", *OUTPUT_KINDS)),
    Option("intra_op_threads", 1, _to_int, "ONNX Runtime threads inside one operator; 0 means "
           "ONNX Runtime's default (all cores). Keep 1 when one RASR process runs per core.", minimum=0),
    Option("inter_op_threads", 1, _to_int, "ONNX Runtime threads running independent operators at "
           "once: 1 runs the graph sequentially (the default); N > 1 (or 0, ONNX Runtime's default) "
           "switches the session to parallel execution, which pays only for graphs with parallel "
           "branches.", minimum=0),
    Option("share_weights", False, _to_bool, "true: ONNX Runtime uses the weights in place, mapped "
           "from a node-local, read-only, content-addressed copy sprintiface writes once "
           "(SPRINTIFACE_CACHE_DIR, else /var/tmp/sprintiface-<uid>; never the model file itself), "
           "instead of packing a private copy per process, so the processes of a node share one copy, "
           "at 5-25% more compute per run. A prepared model (sprintiface prepare) shares its pre-packed "
           "weights at full speed without this key."),
    Option("score_kernel", "auto", _to_score_kernel, "Instruction set of the score loop: auto (the "
           "widest this CPU runs), avx512, avx2 or baseline (SSE2 / NEON). Pin one for bit-identical "
           "scores across a cluster of different CPUs of one architecture (the NEON baseline fuses "
           "multiply-adds, SSE2 cannot); a kernel this CPU lacks is an error."),
    Option("buffer_size", -1, _to_buffer_size, "Frames per buffer that get_feature_buffer_size() "
           "reports to RASR: -1, a whole segment, is what every RASR program can use (RASR's "
           "recognizers and aligner abort at frame N+1 with a positive N; see docs/recognition.md). "
           "N > 0 is kept for a RASR that flushes chunks."),
    # -- priors
    Option("prior_file", None, _to_str, "Prior p(s), one value per class: RETURNN text vector, "
           "RASR XML <vector-f32> or .npy.", is_path=True),
    Option("prior_scale", 1.0, _to_float, "Scale of the prior: score = -log p(s|x) + "
           "prior_scale * log p(s). 0 switches the prior off."),
    Option("prior_space", "log", _to_str, "Space of the values in prior_file: log (+log p(s), "
           "RETURNN's and RASR's convention) or prob (p(s)).", choices=("log", "prob")),
    # -- training (PythonTrainer)
    Option("trainer", "dump", _to_str, "With action train: the trainer that receives the segments: "
           "dump (write them to dump_file), torch (train a PyTorch model: model_file, model), or "
           "package.module:factory for your own (see sprintiface.training.Trainer)."),
    Option("dump_file", None, _to_str, "HDF5 file the dump trainer writes, in RETURNN's HDFDataset "
           "layout (needs h5py: pip install sprintiface[hdf5]); checked at init. Written only by a complete "
           "run (RASR's exit()); an incomplete one leaves <dump_file>.partial.", is_path=True),
    Option("checkpoint_dir", None, _to_str, "Directory for checkpoints: after each epoch the trainer "
           "saves there and epoch.NNN.done marks the epoch finished; a restarted job resumes after the "
           "last finished epoch. trainer torch needs none: without it an epoch is finished when both "
           "<model>.NNN.pt and <model>.NNN.onnx exist, and a restarted job resumes after the last such epoch.",
           is_path=True),
    Option("queue_size", 4, _to_int, "Segments buffered for the trainer's background thread, so that "
           "RASR's feature extraction overlaps training; 0 trains in RASR's thread.", minimum=0),
    # -- the torch trainer (trainer:torch; pip install sprintiface[torch])
    Option("model_file", None, _to_str, "trainer torch: Python file defining get_model(epoch) (a "
           "torch.nn.Module from (B, T, F) features and int32 (B,) lengths to (B, T, C) logits), optionally "
           "get_optimizer(model), train_step(model, batch, epoch), get_learning_rate(epoch). The trainer "
           "writes <model>.<epoch:03d>.pt and .onnx after every epoch.", is_path=True),
    Option("learning_rate", 1e-3, _to_float, "trainer torch: learning rate of the default optimizer "
           "(Adam), and the learning_rate handed to get_optimizer.", minimum=0),
    Option("max_seqs", 32, _to_int, "trainer torch: at most this many segments per mini-batch.", minimum=1),
    Option("max_frames", 5000, _to_int, "trainer torch: at most this many padded frames (segments x "
           "longest segment) per mini-batch; a longer segment is a batch of its own.", minimum=1),
    Option("accum_grad_multiple_step", 1, _to_int, "trainer torch: optimizer step after this many "
           "mini-batches (criterion-by-sprint: segments), gradients averaged over them.", minimum=1),
    Option("torch_threads", 0, _to_int, "trainer torch: PyTorch's intra-op threads; 0 leaves PyTorch's "
           "default (all cores).", minimum=0),
    Option("distributed_timeout", 300.0, _to_float, "trainer torch with several processes (WORLD_SIZE > 1): "
           "seconds a process waits for the others to start their trainer (RASR starts one only with its "
           "process's first segment, so a partition without segments never starts), then it ends with a "
           "TrainerError naming the missing processes; also the timeout of every collective after that. "
           "The wait for process 0's files at an epoch end is not bounded by it.", minimum=1),
    Option("onnx_exporter", "torchscript", _to_str, "trainer torch: the exporter of the per-epoch ONNX "
           "model: torchscript (torch.onnx.export(dynamo=False), fast, keeps T dynamic) or dynamo "
           "(torch.export). Every export is checked against the PyTorch model before it is written.",
           choices=("torchscript", "dynamo")),
    # -- segment ordering (PythonSegmentOrdering)
    Option("seq_ordering", "default", _to_seq_ordering, "Order of the segments in each epoch: default "
           "(corpus order), random (seeded by seed and epoch), sorted / sorted_reverse (by length), "
           "laplace:N (random bins of N segments, each sorted by length, alternating direction). "
           "Lengths need python-segment-order-with-segment-info = true: segmentsInfo's nframes, "
           "or its time (use-data-source is not needed)."),
    Option("seed", 0, _to_int, "Seed of the random orderings."),
    Option("partition_epoch", 1, _to_int, "Split the corpus into N parts: each epoch sees the next part.",
           minimum=1),
    Option("num_epochs", 1, _to_int, "Last epoch the segment list runs to (RETURNN: num_epochs).",
           minimum=1),
    Option("start_epoch", None, _to_int, "First epoch; default: 1, or the epoch after the last finished "
           "one (in checkpoint_dir; for trainer torch without it, the last with <model>.NNN.pt and .onnx).",
           minimum=1),
)


def split_config_string(text: Optional[str]) -> dict[str, str]:
    """``"a:1,b:x:y,,c:"`` -> ``{"a": "1", "b": "x:y", "c": ""}``.

    Items are split at their first ``:``; empty items are ignored. An item
    without ``:`` or a key given twice is a ConfigError.
    """
    items: dict[str, str] = {}
    if text is not None and not isinstance(text, str):
        raise ConfigError(f"config: expected RASR's pymod-config string, got {type(text).__name__} {text!r}")
    if not text:
        return items
    for item in text.split(","):
        if not item.strip():
            continue
        if ":" not in item:
            raise ConfigError(f"pymod-config item {item!r} in {text!r}: expected key:value")
        key, value = item.split(":", 1)
        key = key.strip()
        if key in items:
            raise ConfigError(f"pymod-config key {key!r} is given twice in {text!r}")
        items[key] = value.strip()
    return items


def read_config_file(path: str) -> dict[str, Any]:
    """Top-level keys of the TOML file at ``path``; relative paths among them are taken
    relative to the file's directory."""
    tomllib = _toml()
    try:
        with open(path, "rb") as file:
            text = file.read()
        values: dict[str, Any] = tomllib.loads(text.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config key 'configfile': no such file {path!r} "
                          f"(working directory {os.getcwd()!r})") from None
    except IsADirectoryError:
        raise ConfigError(f"config key 'configfile': {path!r} is a directory, expected a TOML file") from None
    except OSError as error:
        raise ConfigError(f"config key 'configfile': {path!r} cannot be read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config key 'configfile': {path!r} is not UTF-8 text (byte {error.start}); "
                          f"expected a TOML file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            f"config key 'configfile': {path!r} is not valid TOML ({error}). sprintiface reads a TOML file "
            f"of its own keys (docs/configuration.md); it does not read RETURNN configs: export the network "
            f"to ONNX and give onnx:<file> or model:<prefix>,epoch:<n> (docs/migrating-from-returnn.md)") from None
    directory = os.path.dirname(os.path.abspath(path))
    for key, value in values.items():
        option = OPTIONS.get(key)
        if option is not None and option.is_path and isinstance(value, str) and value and \
                not os.path.isabs(value):
            values[key] = os.path.join(directory, value)
    return values


class Config:
    """Parsed, typed options with defaults filled in; read as ``config.key`` (typed) or
    ``config["key"]`` (a key named at run time).

    One field per key of :data:`OPTIONS`, in its order: the table stays the one
    place that says what a key means, its default and how it is parsed; the
    fields repeat only its name and type, for the type checker (a key missing
    here stops the import: see the check below the class). ``given`` holds the
    keys that were set explicitly (in pymod-config or the TOML file), ``raw``
    the pymod-config items as strings (RETURNN's ``sprint_opts``).

    Frozen: setting an attribute is an AttributeError. Two configs are equal when every
    key's value is. (A plain class, not a dataclass: generating a dataclass of this many
    fields cost every cold RASR job ~6 ms of CPU.)
    """

    action: Optional[str]
    configfile: Optional[str]
    log_level: str
    onnx: Optional[str]
    model: Optional[str]
    epoch: Optional[int]
    input_name: Optional[str]
    length_name: Optional[str]
    output_name: Optional[str]
    output_kind: str
    intra_op_threads: int
    inter_op_threads: int
    share_weights: bool
    score_kernel: str
    buffer_size: int
    prior_file: Optional[str]
    prior_scale: float
    prior_space: str
    trainer: str
    dump_file: Optional[str]
    checkpoint_dir: Optional[str]
    queue_size: int
    model_file: Optional[str]
    learning_rate: float
    max_seqs: int
    max_frames: int
    accum_grad_multiple_step: int
    torch_threads: int
    distributed_timeout: float
    onnx_exporter: str
    seq_ordering: str
    seed: int
    partition_epoch: int
    num_epochs: int
    start_epoch: Optional[int]
    given: frozenset[str]
    raw: Mapping[str, str]

    def __init__(self, *, given: frozenset[str] = frozenset(), raw: Optional[Mapping[str, str]] = None,
                 **values: Any) -> None:
        missing = [name for name in OPTIONS if name not in values]
        unknown = [name for name in values if name not in OPTIONS]
        if missing or unknown:
            raise TypeError(f"Config() needs exactly the keys of OPTIONS: missing {missing}, unknown {unknown}")
        state = self.__dict__
        for name in OPTIONS:
            state[name] = values[name]
        state["given"], state["raw"] = given, {} if raw is None else raw

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Config is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Config is frozen: cannot delete {name!r}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[name] for name in OPTIONS)

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if isinstance(other, Config) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __getitem__(self, key: str) -> Any:
        if key not in OPTIONS:
            raise KeyError(key)
        return getattr(self, key)

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={getattr(self, key)!r}" for key in sorted(self.given))
        return f"Config({shown})"


def _check_fields_are_the_options() -> None:
    # A key added to OPTIONS needs its field in Config (name and type): said at import,
    # in every test run, rather than as an AttributeError in a RASR job.
    names = [name for name in Config.__annotations__ if name not in ("given", "raw")]
    if names != list(OPTIONS):
        missing = [name for name in OPTIONS if name not in names]
        extra = [name for name in names if name not in OPTIONS]
        raise TypeError(f"sprintiface.config.Config's fields differ from OPTIONS: add a typed field for "
                        f"{missing}, remove {extra}, in OPTIONS' order")


_check_fields_are_the_options()


def load_config(text: Optional[str], **overrides: Any) -> Config:
    """Parse a pymod-config string (and its ``configfile``) into a :class:`Config`.

    ``overrides`` (typed values, e.g. from the command line) win over both.
    Unknown keys and bad values raise ConfigError naming the key, the value and
    what is allowed.
    """
    raw = split_config_string(text)
    given: dict[str, tuple[Any, str]] = {}
    configfile = overrides.get("configfile") or raw.get("configfile")
    if configfile:
        for key, value in read_config_file(configfile).items():
            given[key] = (value, f"in {configfile}")
    for key, value in raw.items():
        given[key] = (value, "in pymod-config")
    for key, value in overrides.items():
        if value is not None:
            given[key] = (value, "given directly")
    unknown = sorted(key for key in given if key not in OPTIONS)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(map(repr, unknown))} ({given[unknown[0]][1]}); "
            f"known keys: {', '.join(OPTIONS)}")
    values = {name: option.default for name, option in OPTIONS.items()}
    for key, (value, origin) in given.items():
        values[key] = OPTIONS[key].parse(value, origin) if value is not None else None
    return Config(**values, given=frozenset(given), raw=raw)


def require_file(config: Config, key: str) -> str:
    """The path under ``key``, which must name an existing file."""
    path: Optional[str] = config[key]
    if not path:
        raise ConfigError(f"config key {key!r} is required here")
    if os.path.isdir(path):
        raise ConfigError(f"config key {key!r}: {path!r} is a directory, expected a file")
    if not os.path.isfile(path):
        raise ConfigError(f"config key {key!r}: no such file {path!r} (working directory {os.getcwd()!r})")
    return path


def resolve_model_path(config: Config) -> str:
    """The ONNX file the config names: ``onnx:<path>``, or ``model:<prefix>`` with ``epoch:<n>``."""
    if config.onnx and config.model:
        raise ConfigError(
            f"config keys 'onnx' ({config.onnx!r}) and 'model' ({config.model!r}) both name a model; give one")
    if config.onnx:
        return require_file(config, "onnx")
    if config.model:
        if config.epoch is None:
            raise ConfigError(
                f"config key 'model' ({config.model!r}) needs 'epoch' to resolve "
                f"<model>.<epoch:03d>.onnx; or give onnx:<path>")
        path = f"{config.model}.{config.epoch:03d}.onnx"
        if os.path.isdir(path):
            raise ConfigError(f"config keys 'model' and 'epoch' resolve to {path!r}, a directory, expected a file")
        if not os.path.isfile(path):
            raise ConfigError(
                f"config keys 'model' and 'epoch' resolve to {path!r}, which does not exist "
                f"(working directory {os.getcwd()!r})")
        return path
    raise ConfigError("no model: give onnx:<path>, or model:<prefix> with epoch:<n>")


def options_table() -> str:
    """Every key of ``OPTIONS`` as a Markdown table (docs/configuration.md is this text)."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for option in OPTIONS.values():
        default = "\N{EN DASH}" if option.default is None else f"`{option.default}`"
        text = option.help
        if option.choices:
            text += f" Allowed: {', '.join(f'`{c}`' for c in option.choices)}."
        lines.append(f"| `{option.name}` | {default} | {text} |")
    return "\n".join(lines) + "\n"
