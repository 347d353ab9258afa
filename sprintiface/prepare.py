"""Prepared models (``sprintiface prepare MODEL.onnx -o OUT``): load with onnxruntime alone, share weights.

A prepared model is the model as the scorer serves it — the final softmax (and
the bias before it) cut, the exporter's stale shapes forgotten — with the plan
recorded in its own metadata (``sprintiface.plan``, sprintiface.graph), so that
loading it needs onnxruntime and numpy only. Two forms:

- **shareable** (the default): ``OUT`` and a weights file ``OUT.<id>.data`` next
  to it, written by ONNX Runtime with its pre-packed weights
  (``session.save_external_prepacked_constant_initializers``). Every process
  that loads ``OUT`` maps the packed weights from the page cache: the jobs of a
  node share one copy, and run at full speed. The packed layout belongs to the
  CPU's kernels and the ONNX Runtime version, which are recorded
  (``sprintiface.packed_for``); where they differ, ONNX Runtime notices (its
  packed blobs are keyed by a hash of what it packs itself) and packs a private
  copy instead — scores stay right, the weights are then not shared, and
  sprintiface says so at load. Prepare once per CPU type of a cluster. The weights file
  holds each packed weight twice, the original and the blob: ONNX Runtime (1.32) packs
  the original at every load to find the blob by that hash and checks the blob against
  it, so a job reads both and keeps only the blob mapped (tests/test_shareable_weights.py).
- **plain** (``--plain``): one self-contained file, weights inline.

``--quantize`` measures int8 variants against float32 on sample features and
writes the one that pays (sprintiface.quantize), or the float model and says
that none does.
Everything is written in a scratch folder ``.OUT.<host>.<pid>.<random>.scratch``
next to OUT (removed at the end; one a killed prepare left is removed by the next
prepare of OUT once its process is dead) and renamed into place: complete or
absent. The renames are serialised by a lock on ``.OUT.lock`` (removed by its
holder; a killed holder's is harmless), held from reading the old OUT to the
last rename, so concurrent prepares of one OUT end with the last one's pair
whole. Replacing OUT removes the weights file the old OUT named, nothing else:
``OUT.int8.<id>.data`` of another prepared model stays. The weights file is
read-only (0444: nothing ever writes it again), OUT is 0644.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Optional

from sprintiface import _files, graph, onnx_proto, plan
from sprintiface.engine import packing_target
from sprintiface.errors import ModelError
from sprintiface.quantize import MIN_AGREEMENT, MIN_SPEEDUP, QuantizationReport

if TYPE_CHECKING:  # annotations only (postponed): onnx is imported when a model is prepared
    from onnx import ModelProto

#: metadata_props keys besides the plan.
PACKED_FOR_KEY = "sprintiface.packed_for"
PREPARED_BY_KEY = "sprintiface.prepared_by"
#: Test seam (environment): the name of a step at which prepare stops itself with
#: SIGSTOP, so that a test can act on a real process there (``scratch-written``:
#: all is in the scratch folder; ``between-renames``: the weights file renamed, OUT not yet).
PAUSE_ENV = "SPRINTIFACE_PREPARE_PAUSE"


def _pause_point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) == name:
        os.kill(os.getpid(), signal.SIGSTOP)

@dataclass
class Prepared:
    """What ``prepare_model`` wrote."""

    path: str
    files: list[str]
    form: str                      # "shareable" or "plain"
    interface: plan.ModelInterface
    packed_for: Optional[dict[str, object]] = None
    quantization: Optional[QuantizationReport] = None
    notes: list[str] = field(default_factory=list)
    #: Bytes of each of ``files`` as written (a later prepare of the same OUT may have
    #: replaced them by the time the caller looks).
    sizes: dict[str, int] = field(default_factory=dict)


def _require_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError:
        raise ModelError("preparing a model needs the onnx package: pip install 'sprintiface[onnx]'") from None
    module: ModuleType = onnx  # named: where onnx is not installed (the lint venv) its type is Any
    return module


def _load(onnx: ModuleType, path: str) -> ModelProto:
    """The ``onnx.ModelProto`` at ``path``, its weights read in (prepare writes them anew);
    ModelError when it cannot be read."""
    try:
        model: ModelProto = onnx.load(path)
    except FileNotFoundError:
        raise ModelError(f"ONNX model {path!r} does not exist") from None
    except Exception as error:  # onnx raises DecodeError, OSError, ValueError, ...
        raise ModelError(f"ONNX model {path!r} cannot be read: {error}") from None
    return model


def _set_metadata(model: ModelProto, entries: dict[str, str]) -> None:
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for key, value in kept + list(entries.items()):
        model.metadata_props.add(key=key, value=value)


def prepare_model(source: str, output: str, *, plain: bool = False, quantize: bool = False,
                  sample_features: Optional[str] = None, input_name: Optional[str] = None,
                  output_name: Optional[str] = None, length_name: Optional[str] = None,
                  output_kind: str = "auto", keep_slower: bool = False, min_speedup: float = MIN_SPEEDUP,
                  min_agreement: float = MIN_AGREEMENT, quantize_variants: Optional[list[str]] = None) -> Prepared:
    """Prepare ``source`` into ``output`` (see the module docstring). With ``quantize`` the
    int8 variant sprintiface.quantize chooses (among ``quantize_variants``, default all) by
    ``min_speedup``, ``min_agreement`` and ``keep_slower`` is written, or the float model when
    none pays; ``Prepared.quantization`` says which and why."""
    from sprintiface._version import __version__

    onnx = _require_onnx()
    if os.path.isdir(output):
        raise ModelError(f"prepare: the output {output!r} is a directory, expected a file name")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ModelError(f"prepare: the output's directory {directory!r} does not exist")
    model = _load(onnx, source)
    recorded = {p.key: p.value for p in model.metadata_props}
    if plan.PLAN_KEY in recorded:  # prepared already (another form, or to quantize): its plan holds
        interface = plan.interface_from_metadata(recorded, source)
    else:
        interface = graph.prepare(model, source, input_name, output_name, length_name, output_kind)
    metadata = plan.interface_to_metadata(interface)
    metadata[PREPARED_BY_KEY] = json.dumps({"sprintiface": __version__, "source": os.path.basename(source),
                                            "quantized": quantize})
    _files.remove_stale_scratch(output)
    with _files.scratch_directory(output) as work:
        report = None
        if quantize:
            from sprintiface import quantize as int8

            quantized, report = int8.quantize(onnx, model, metadata, work, sample_features, min_speedup=min_speedup,
                                              min_agreement=min_agreement, keep_slower=keep_slower,
                                              set_metadata=_set_metadata, save=_save_with_external_weights,
                                              variants=quantize_variants)
            metadata[PREPARED_BY_KEY] = json.dumps({"sprintiface": __version__, "source": os.path.basename(source),
                                                    "quantized": report.chosen or False})
            if quantized is not None:
                model = quantized
        _set_metadata(model, metadata)
        if plain:
            return _write_plain(onnx, model, output, work, interface, report)
        return _write_shareable(onnx, model, output, work, interface, report)


def _recorded_weights_name(path: str) -> Optional[str]:
    """The weights file the prepared model at ``path`` names (``sprintiface.packed_for``),
    when it is one prepare writes for it (``<name>.<id>.data`` next to it); else None."""
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    try:
        recorded = json.loads(onnx_proto.read_metadata(path).get(PACKED_FOR_KEY, "{}")).get("weights")
    except (ModelError, ValueError, AttributeError):
        return None
    name = os.path.basename(path)
    if isinstance(recorded, str) and recorded == os.path.basename(recorded) and \
            recorded.startswith(name + ".") and recorded.endswith(".data"):
        return recorded
    return None


def _commit(staged: str, output: str, staged_data: Optional[str] = None, data: Optional[str] = None) -> None:
    """Rename the staged model (and its weights file) into place, serialised with other
    prepares of ``output``, and remove the weights file that the replaced OUT named."""
    directory = os.path.dirname(os.path.abspath(output))
    with _files.exclusive_lock(os.path.join(directory, f".{os.path.basename(output)}.lock")):
        old = _recorded_weights_name(output)  # read before OUT is replaced
        if staged_data is not None:
            assert data is not None  # staged_data is given with its final name
            os.replace(staged_data, data)
        _pause_point("between-renames")
        os.replace(staged, output)  # the model last: until here an earlier OUT stays whole
        if old is not None and (data is None or old != os.path.basename(data)):
            with contextlib.suppress(OSError):  # gone already, or not ours to remove: nothing depends on it any more
                os.unlink(os.path.join(directory, old))


def _write_plain(onnx: ModuleType, model: ModelProto, output: str, work: str, interface: plan.ModelInterface,
                 report: Optional[QuantizationReport]) -> Prepared:
    staged = os.path.join(work, os.path.basename(output))
    try:
        onnx.save_model(model, staged)
    except ValueError:  # protobuf's 2 GB
        raise ModelError("prepare --plain: the model is over 2 GB, which one ONNX file cannot hold; "
                         "prepare the shareable form") from None
    os.chmod(staged, 0o644)
    sizes = {output: os.path.getsize(staged)}
    _pause_point("scratch-written")
    _commit(staged, output)
    return Prepared(output, [output], "plain", interface, quantization=report, sizes=sizes)


def _save_with_external_weights(onnx: ModuleType, model: ModelProto, path: str, page: int = 4096) -> None:
    """``model`` to ``path`` with initializers of 1 KB and more in ``path + '.data'``,
    each at an offset that is a multiple of ``page`` (so ONNX Runtime can map it)."""
    from onnx import external_data_helper

    data_name = os.path.basename(path) + ".data"
    offset = 0
    with open(os.path.join(os.path.dirname(path), data_name), "wb") as data:
        for tensor in model.graph.initializer:
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < onnx_proto.EXTERNAL_MIN_BYTES:
                continue
            padding = (-offset) % page
            data.write(b"\0" * padding)
            offset += padding
            data.write(tensor.raw_data)
            external_data_helper.set_external_data(tensor, data_name, offset, len(tensor.raw_data))
            offset += len(tensor.raw_data)
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(model, path)


def _write_shareable(onnx: ModuleType, model: ModelProto, output: str, work: str, interface: plan.ModelInterface,
                     report: Optional[QuantizationReport]) -> Prepared:
    import onnxruntime

    from sprintiface.engine import session_options

    staged_source = os.path.join(work, "source.onnx")
    _save_with_external_weights(onnx, model, staged_source)
    name = os.path.basename(output)
    data_name = f"{name}.{os.urandom(4).hex()}.data"  # a new name: a model being replaced keeps its own
    staged = os.path.join(work, name)
    options = session_options()
    # Layout changes for one CPU (NCHWc) are left to the loading process: EXTENDED, not ALL.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = staged
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", data_name)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                     str(onnx_proto.EXTERNAL_MIN_BYTES))
    options.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    try:
        onnxruntime.InferenceSession(staged_source, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ModelError(f"prepare: ONNX Runtime cannot load the prepared model: {error}") from None
    staged_data = os.path.join(work, data_name)
    has_data = os.path.exists(staged_data)  # not when no initializer was big enough for the weights file
    packed_for = dict(packing_target(), weights=data_name) if has_data else packing_target()
    entries = {key: value for key, value in ((p.key, p.value) for p in model.metadata_props)}
    entries[PACKED_FOR_KEY] = json.dumps(packed_for, separators=(",", ":"))
    written = onnx_proto.read_metadata(staged)
    missing = {key: value for key, value in entries.items() if written.get(key) != value}
    if missing:
        onnx_proto.append_metadata(staged, missing)
    os.chmod(staged, 0o644)
    sizes = {output: os.path.getsize(staged)}
    if not has_data:
        _pause_point("scratch-written")
        _commit(staged, output)
        return Prepared(output, [output], "shareable", interface, packed_for=packed_for, quantization=report,
                        sizes=sizes)
    final_data = os.path.join(os.path.dirname(os.path.abspath(output)), data_name)
    # Read-only for everybody, whatever the umask: processes map it, nothing may write it again.
    os.chmod(staged_data, 0o444)
    sizes[final_data] = os.path.getsize(staged_data)
    _pause_point("scratch-written")
    _commit(staged, output, staged_data, final_data)
    return Prepared(output, [output, final_data], "shareable", interface, packed_for=packed_for, quantization=report,
                    sizes=sizes)
