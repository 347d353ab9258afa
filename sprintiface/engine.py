"""The ONNX Runtime engine: one inference session for a frame-synchronous acoustic model.

Every caller (the feature scorer, the trainer's forwarding, the command line)
gets its engine from :meth:`OnnxEngine.from_config`: one session per model and
session setting per process. What the model takes and gives, and the cut of
its final softmax, are :mod:`sprintiface.graph`'s; this module only runs it.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, ClassVar, Optional, TypedDict, Union

import numpy

from sprintiface import onnx_proto, plan, weight_store
from sprintiface.config import Config, resolve_model_path
from sprintiface.errors import ModelError
from sprintiface.plan import LENGTH_DTYPES, ModelInterface

if TYPE_CHECKING:  # annotations only (postponed): importing onnxruntime costs a cold job its load time
    import onnxruntime

#: Frames of the warm-up run at load time (so the first segment is not slow).
WARMUP_FRAMES = 16


def session_options(intra_op_threads: int = 1, inter_op_threads: int = 1) -> onnxruntime.SessionOptions:
    """The ONNX Runtime session options of every sprintiface session."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    # inter_op_threads only means something in parallel execution: 1 keeps the graph sequential.
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL if inter_op_threads == 1 else \
        onnxruntime.ExecutionMode.ORT_PARALLEL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # T changes every segment: memory patterns planned for one T do not fit the next.
    options.enable_mem_pattern = False
    # Many RASR processes share a node: idle threads must sleep, not spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Failures are raised as ModelError with ONNX Runtime's message; no stderr noise.
    options.log_severity_level = 4
    return options


#: CPU features whose kernels ONNX Runtime's packed weight layouts may depend on.
_CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_tile",
              "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")


def packing_target() -> dict[str, object]:
    """What pre-packed weights depend on, for this process: ONNX Runtime's version,
    the machine and the CPU's relevant features. (A prepared model records this
    and the name of its weights file under ``sprintiface.packed_for``.)"""
    import onnxruntime

    flags = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"onnxruntime": onnxruntime.__version__, "machine": os.uname().machine,
            "cpu": sorted(flag for flag in _CPU_FLAGS if flag in flags)}


def return_freed_memory() -> None:
    """Ask glibc to return freed heap pages to the system (a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def mapped_bytes(path: str) -> int:
    """Resident bytes of this process's memory mappings of the file ``path`` (Linux; 0
    elsewhere): file pages in the page cache, shared by every process that maps them."""
    import re

    mapping = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")  # a mapping's first line: "start-end perms ... path"
    target, total, inside = os.path.realpath(path), 0, False
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
            for line in smaps:
                if mapping.match(line):
                    parts = line.split(None, 5)
                    inside = len(parts) == 6 and parts[5].strip() == target
                elif inside and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


def _trimming_run_options() -> onnxruntime.RunOptions:
    import onnxruntime

    options = onnxruntime.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def _prepare_in_memory(path: str, input_name: Optional[str], output_name: Optional[str], length_name: Optional[str],
                       output_kind: str) -> tuple[ModelInterface, onnx_proto.ModelProto]:
    """A plain model, prepared at load: ``(interface, model)``, the
    :class:`sprintiface.onnx_proto.ModelProto` read from ``path`` (open until the caller
    closes it) with its cut made; its weights are not read (graph.prepare reads a cut
    bias alone). No onnx import: sprintiface reads ONNX's wire format itself."""
    from sprintiface import graph

    model = onnx_proto.load(path)
    try:
        interface = graph.prepare(model, path, input_name, output_name, length_name, output_kind)
    except BaseException:
        model.close()
        raise
    return interface, model


def weights_stay_in_the_file() -> bool:
    """Whether this onnxruntime reads the external data of a model given as bytes from a
    folder it is told (session.model_external_initializers_file_folder_path): 1.21 and later."""
    import onnxruntime

    try:
        major, minor = (int(part) for part in onnxruntime.__version__.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (1, 21)


def _resident_bytes() -> Optional[int]:
    """RssAnon + RssFile of this process (Linux), without its shared-memory (tmpfs) pages."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            fields = dict(line.split(":", 1) for line in status if line.startswith(("RssAnon", "RssFile")))
        return sum(int(value.split()[0]) * 1024 for value in fields.values())
    except (OSError, ValueError):
        return None


def _check_unchanged(model: onnx_proto.ModelProto, path: str) -> None:
    """ModelError when the file ``model`` was read from (where its weights were copied from)
    was replaced or rewritten while it was: the copy may mix two models."""
    if not model.source_is_current():
        raise ModelError(f"ONNX model {path!r} changed while it was loaded (replaced or rewritten); load it again")


def _check_prepared(interface: ModelInterface, input_name: Optional[str], output_name: Optional[str],
                    length_name: Optional[str], output_kind: str) -> None:
    """A prepared model serves what its plan says: config keys that ask for something else are errors."""
    asked = {"input_name": (input_name, interface.feature_input.name),
             "output_name": (output_name, interface.output.name),
             "length_name": (length_name, interface.length_input.name if interface.length_input else None),
             "output_kind": (None if output_kind == "auto" else output_kind, interface.output_kind)}
    for key, (given, planned) in asked.items():
        if given is not None and given != planned:
            raise ModelError(f"ONNX model {interface.path!r} was prepared with {key} {planned!r}, but the config "
                             f"asks for {given!r}: prepare it again with that setting")


def _check_session(session: onnxruntime.InferenceSession, interface: ModelInterface) -> None:
    """The tensors the plan names exist in the session (a prepared file may have been edited)."""
    inputs = {node.name for node in session.get_inputs()}
    outputs = {node.name for node in session.get_outputs()}
    wanted = [(interface.feature_input.name, inputs, "input"), (interface.served_output, outputs, "output")]
    if interface.length_input is not None:
        wanted.append((interface.length_input.name, inputs, "input"))
    for name, names, what in wanted:
        if name not in names:
            raise ModelError(f"ONNX model {interface.path!r}: its plan serves {what} {name!r}, which the model "
                             f"does not have (it has {', '.join(sorted(names))}); prepare it again")


def _share_in_place(options: onnxruntime.SessionOptions) -> None:
    # Use the (memory-mapped, page-cache) weights in place instead of packing private
    # copies: the processes of a node share one copy, at some compute per run.
    options.add_session_config_entry("session.disable_prepacking", "1")


def _recorded_weights(path: str, packed_for: str) -> Optional[str]:
    """The weights file a prepared model's ``sprintiface.packed_for`` names, next to the model."""
    import json

    try:
        name = json.loads(packed_for).get("weights")
    except (ValueError, AttributeError):
        return None
    return os.path.join(os.path.dirname(os.path.realpath(path)), name) if name else None


def _new_session(source: Union[str, bytes], path: str,
                 options: onnxruntime.SessionOptions) -> onnxruntime.InferenceSession:
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ModelError(f"ONNX Runtime cannot load {path!r}: {error}") from None


class _EngineOptions(TypedDict):
    """The keyword arguments of :class:`OnnxEngine` a config sets (OnnxEngine.from_config)."""

    intra_op_threads: int
    inter_op_threads: int
    input_name: Optional[str]
    output_name: Optional[str]
    length_name: Optional[str]
    output_kind: str
    share_weights: bool


class OnnxEngine:
    """One ONNX Runtime session plus what is needed to feed it RASR's frames.

    ``interface`` (sprintiface.plan.ModelInterface) says what is fed and read;
    ``kind`` is what :meth:`forward` and :meth:`run_into` give (the served
    output kind: ``logits`` when a final softmax was cut), ``logit_bias`` a cut
    bias the score kernel adds (float32 (C,)) or None.
    """

    _cache: ClassVar[dict[tuple[object, ...], OnnxEngine]] = {}
    _cache_lock = threading.Lock()

    def __init__(self, path: str, *, intra_op_threads: int = 1, inter_op_threads: int = 1,
                 input_name: Optional[str] = None, output_name: Optional[str] = None,
                 length_name: Optional[str] = None, output_kind: str = "auto", share_weights: bool = False) -> None:
        self.path = path
        options = session_options(intra_op_threads, inter_op_threads)
        metadata = onnx_proto.read_metadata(path)
        #: Whether the model was prepared (``sprintiface prepare``): loaded with onnxruntime alone.
        self.prepared = plan.PLAN_KEY in metadata
        #: The file of weights this session maps (sprintiface's own: a prepared model's
        #: ``OUT.<id>.data`` or the node's cached copy), or None.
        self.weights_file: Optional[str] = None
        #: Bytes of weights this load copied into a private scratch folder (plain models
        #: without share_weights; removed once the session was made), and that folder's
        #: root: on tmpfs (/dev/shm) the copy was memory while it lived.
        self.private_copy_bytes = 0
        self.private_copy_root: Optional[str] = None
        #: This process's resident memory (RssAnon + RssFile, bytes) when the session was
        #: made, the private copy still there, or None: with a copy on tmpfs, add
        #: private_copy_bytes for what the load held then (for benchmarks' honest peaks).
        self.resident_with_private_copy: Optional[int] = None
        if self.prepared:
            interface = plan.interface_from_metadata(metadata, path)
            _check_prepared(interface, input_name, output_name, length_name, output_kind)
            packed_for = metadata.get("sprintiface.packed_for")
            if packed_for:
                self.weights_file = _recorded_weights(path, packed_for)
            if share_weights:
                _share_in_place(options)
            self.session = _new_session(path, path, options)
        else:
            interface, model = _prepare_in_memory(path, input_name, output_name, length_name, output_kind)
            with model:  # the user's file: open while its weights are copied, closed after
                self.session = self._load_plain(path, model, options, share_weights)
            del model
        _check_session(self.session, interface)
        self.interface: ModelInterface = interface
        self.kind = interface.served_kind
        self.logit_bias = interface.logit_bias
        self.batched = interface.feature_input.rank == 3
        self.output_batched = interface.output.rank == 3
        self.input_dim = interface.input_dim
        self._length_dtype = LENGTH_DTYPES[interface.length_input.elem_type] if interface.length_input else None
        self.warmup_rows: Optional[int] = None
        self.output_dim = self._warm_up(self.input_dim) if self.input_dim else interface.output_dim
        self._check_bias()
        # Loading leaves freed heap behind (ONNX Runtime's parse of the graph): give it back.
        return_freed_memory()
        #: Bytes of the prepared weights file mapped in this process (shared with other
        #: processes through the page cache), or None for a model without one.
        self.shared_weight_bytes = self._report_sharing(metadata.get("sprintiface.packed_for"), share_weights)

    def _load_plain(self, path: str, model: onnx_proto.ModelProto, options: onnxruntime.SessionOptions,
                    share_weights: bool) -> onnxruntime.InferenceSession:
        """The session of a plain model (see _prepare_in_memory): its weights are copied
        out of the user's files first (sprintiface.weight_store), so that ONNX Runtime
        maps only copies that are sprintiface's own (docs/cluster.md), never the user's.

        ``share_weights``: the node's content-addressed read-only copy, used in place
        (shared by the node's processes; one copy on the node). Else a private copy
        per tensor in a scratch folder removed right after the session is made:
        ONNX Runtime packs from it into its own memory, what it keeps unpacked stays
        mapped from the (then unlinked) copy; the process holds each weight once.
        """
        from sprintiface import _files
        from sprintiface.log import logger

        weights = weight_store.external_weights(model, path)
        if not weights:
            return _new_session(model.SerializeToString(), path, options)
        by_bytes = weights_stay_in_the_file()
        if share_weights and not by_bytes:
            logger.warning("%s: share_weights needs onnxruntime 1.21 or later for a model that is not prepared; "
                           "it is loaded privately (prepare it with `sprintiface prepare` to share it)", path)
        elif share_weights:
            _share_in_place(options)
            try:
                folder = weight_store.cached_weights(weights, path)
            except OSError as error:
                logger.warning("%s: the node's shared copy of its weights cannot be written (%s): it is loaded "
                               "privately, not shared between processes; set SPRINTIFACE_CACHE_DIR to a writable "
                               "node-local folder", path, error)
            else:
                _check_unchanged(model, path)
                self.weights_file = os.path.join(folder, weights[0].tensor.external_data[0].value)
                options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
                return _new_session(model.SerializeToString(), path, options)
        failures = []
        for root in weight_store.private_roots():
            root = os.path.join(root, "load")
            _files.remove_stale_scratch(root)
            with _files.scratch_directory(root) as work:
                try:
                    weight_store.copy_privately(weights, work)
                except OSError as error:  # a full /dev/shm (containers have 64 MB): the next folder
                    failures.append(f"{work!r}: {error}")
                    continue
                _check_unchanged(model, path)
                self.private_copy_bytes = sum(weight.length for weight in weights)
                self.private_copy_root = os.path.dirname(root)
                if by_bytes:
                    options.add_session_config_entry("session.model_external_initializers_file_folder_path", work)
                    session = _new_session(model.SerializeToString(), path, options)
                else:
                    # Before 1.21 ONNX Runtime reads external data only next to a model file: the
                    # graph goes beside the copies (sprintiface's own folder, removed after the session).
                    graph_file = os.path.join(work, "model.onnx")
                    with open(graph_file, "xb") as out:
                        model.write(out)
                    session = _new_session(graph_file, path, options)
                self.resident_with_private_copy = _resident_bytes()
                return session
        raise ModelError(f"ONNX model {path!r}: its weights cannot be copied for loading "
                         f"({'; '.join(failures) or 'no writable /dev/shm or temp folder'})")

    def _report_sharing(self, packed_for: Optional[str], share_weights: bool) -> Optional[int]:
        """Log whether the weights are used from a file shared with the node's other processes."""
        from sprintiface.log import logger

        if not packed_for:
            if self.weights_file is None:
                return None
            mapped = mapped_bytes(self.weights_file)
            logger.info("%s: %.1f MB of weights mapped from the node's copy %s, shared with the node's other "
                        "processes", self.path, mapped / 1e6, self.weights_file)
            return mapped
        import json

        recorded = json.loads(packed_for)
        recorded.pop("weights", None)
        weights = self.weights_file or ""
        mapped = mapped_bytes(weights)
        here = packing_target()
        if recorded != here and not share_weights:
            logger.warning(
                "%s: its weights were pre-packed for %s; this process runs %s, so ONNX Runtime packs them "
                "again in private memory (scores are right, the weights are not shared between processes): "
                "prepare the model on this CPU type, or set share_weights:true", self.path, recorded, here)
        else:
            logger.info("%s: %.1f MB of weights mapped from %s, shared with the node's other processes",
                        self.path, mapped / 1e6, weights)
        return mapped

    def _check_bias(self) -> None:
        if self.logit_bias is not None and self.output_dim and self.logit_bias.shape[0] != self.output_dim:
            raise ModelError(
                f"ONNX model {self.path!r}: the bias before its softmax has {self.logit_bias.shape[0]} values, "
                f"but the model gives {self.output_dim} classes")

    @classmethod
    def from_config(cls, config: Config) -> OnnxEngine:
        """The process-wide engine for the model and session settings ``config`` names
        (``onnx`` or ``model``/``epoch``; names, ``output_kind``, threads); made on first use."""
        path = resolve_model_path(config)
        options = _EngineOptions(intra_op_threads=config.intra_op_threads, inter_op_threads=config.inter_op_threads,
                       input_name=config.input_name, output_name=config.output_name,
                       length_name=config.length_name, output_kind=config.output_kind,
                       share_weights=config.share_weights)
        real = os.path.realpath(path)
        stat = os.stat(real)
        # The file's identity too: a model written again under the same name is a new model.
        key = (real, stat.st_ino, stat.st_size, stat.st_mtime_ns, tuple(sorted(options.items())))
        with cls._cache_lock:
            engine = cls._cache.get(key)
            if engine is None:
                engine = cls._cache[key] = cls(path, **options)
            return engine

    def _warm_up(self, input_dim: int) -> int:
        """Run once so that kernels and buffers exist before the first segment;
        returns the number of classes the output really has."""
        frames = numpy.zeros((WARMUP_FRAMES, input_dim), dtype=numpy.float32)
        try:
            output = self.forward(frames)
            #: Score rows the model gives for WARMUP_FRAMES frames (fewer: it downsamples).
            self.warmup_rows = output.shape[0]
            return int(output.shape[1])
        except ModelError as error:
            raise ModelError(f"{error}; the model does not run on {WARMUP_FRAMES} frames: an export that "
                             f"baked its example length into the graph runs at that length only") from None

    def _feeds(self, frames: numpy.ndarray) -> dict[str, numpy.ndarray]:
        feeds = {self.interface.feature_input.name: frames[None] if self.batched else frames}
        length_input = self.interface.length_input
        if self._length_dtype is not None:
            assert length_input is not None  # _length_dtype is set for a length input only
            length = numpy.array([frames.shape[0]] if length_input.rank == 1 else frames.shape[0],
                                 dtype=self._length_dtype)
            feeds[length_input.name] = length
        return feeds

    def forward(self, frames: numpy.ndarray) -> numpy.ndarray:
        """Run on float32 (T, F) frames; returns a fresh float32 (T', C) C-contiguous array
        of the served output (``kind``, without ``logit_bias``; T' < T for a downsampling
        model). :func:`sprintiface.scores.neg_log_scores` turns it into scores."""
        try:
            (output,) = self.session.run([self.interface.served_output], self._feeds(frames))
        except Exception as error:
            raise ModelError(f"ONNX model {self.path!r} failed on {frames.shape[0]} frames of dim "
                             f"{frames.shape[1]}: {error}") from None
        return numpy.ascontiguousarray(output[0] if self.output_batched else output)

    def bind_input_dim(self, input_dim: int) -> None:
        """For a model with a dynamic feature axis: fix it at ``input_dim`` and learn the
        number of classes from a warm-up run (no-op when the axis is static)."""
        if self.input_dim is None:
            self.input_dim = input_dim
            self.output_dim = self._warm_up(input_dim)
            self._check_bias()

    def check_frame_synchronous(self) -> None:
        """Raise ModelError unless the model gives one score row per frame (what the feature
        scorer needs; a downsampling or pooling model serves the trainer's forwarding only)."""
        rows = self.warmup_rows
        if rows is not None and rows != WARMUP_FRAMES:
            raise ModelError(
                f"ONNX model {self.path!r} gives {rows} score row(s) for {WARMUP_FRAMES} frames (output "
                f"{self.interface.output.describe()}): the feature scorer needs one row per frame, [B, T, C] or "
                f"[T, C]; a downsampling or pooling model serves the trainer's feedInputForwarding only")

    def check_dims(self, input_dim: int, output_dim: int) -> None:
        """Raise ModelError unless the model takes ``input_dim`` features and gives ``output_dim`` classes."""
        if self.input_dim is not None and self.input_dim != input_dim:
            raise ModelError(
                f"ONNX model {self.path!r} takes features of dim {self.input_dim} "
                f"(input {self.interface.feature_input.name!r}), but RASR's feature-dimension is {input_dim}")
        self.bind_input_dim(input_dim)
        if self.output_dim and self.output_dim != output_dim:
            raise ModelError(
                f"ONNX model {self.path!r} gives {self.output_dim} classes (output {self.interface.output.name!r}), "
                f"but RASR's output dimension (python-feature-scorer-output-dimension / trainer-output-dimension) "
                f"is {output_dim}")

    def new_binding(self) -> Binding:
        """An IOBinding for :meth:`run_into` (one per caller; bindings are not thread-safe)."""
        return Binding(self)

    def run_into(self, binding: Binding, frames_address: int, num_frames: int, out_address: int) -> None:
        """Run on ``num_frames`` float32 frames at ``frames_address`` ((T, input_dim) row-major,
        read in place) and write the served output, float32 (T, output_dim) row-major, to
        ``out_address``. The caller keeps both blocks alive and unmoved meanwhile."""
        io = binding.io
        # Binding costs microseconds a tensor: a buffer of the same length at the same
        # addresses (chunks, equal segments) runs with what is bound already.
        if binding.bound != (frames_address, num_frames, out_address):
            binding.bound = None
            shape = [1, num_frames, self.input_dim] if self.batched else [num_frames, self.input_dim]
            io.bind_input(self.interface.feature_input.name, "cpu", 0, numpy.float32, shape, frames_address)
            if binding.length is not None:
                length_input = self.interface.length_input
                assert length_input is not None  # binding.length exists for a length input only
                binding.length[0] = num_frames
                io.bind_input(length_input.name, "cpu", 0, self._length_dtype,
                              binding.length_shape, binding.length_address)
            out_shape = [1, num_frames, self.output_dim] if self.output_batched else [num_frames, self.output_dim]
            io.bind_output(self.interface.served_output, "cpu", 0, numpy.float32, out_shape, out_address)
            binding.bound = (frames_address, num_frames, out_address)
        try:
            if binding.trim_arena:
                # ONNX Runtime's arena keeps what its largest run needed; after an outlier the
                # scorer asks for it back once, at the end of this run.
                binding.trim_arena = False
                self.session.run_with_iobinding(io, _trimming_run_options())
            else:
                self.session.run_with_iobinding(io)
        except Exception as error:
            message = str(error)
            if "computed output shape" in message:
                raise ModelError(
                    f"ONNX model {self.path!r} does not give one score row per frame: {num_frames} frames "
                    f"in, a different shape out "
                    f"({message.split('but the computed output shape for this run is')[-1].split('.')[0].strip()}); "
                    f"the feature scorer needs [B, T, C] with T equal to the input's T") from None
            raise ModelError(f"ONNX model {self.path!r} failed on {num_frames} frames: {message}") from None


class Binding:
    """ONNX Runtime IOBinding plus the length input's storage, for one caller of run_into."""

    def __init__(self, engine: OnnxEngine) -> None:
        self.io = engine.session.io_binding()
        #: (frames address, frames, output address) of what is bound, or None.
        self.bound: Optional[tuple[int, int, int]] = None
        #: Give ONNX Runtime's arena back to the system at the end of the next run.
        self.trim_arena = False
        self.length: Optional[numpy.ndarray] = None
        if engine._length_dtype is not None:
            length_input = engine.interface.length_input
            assert length_input is not None  # _length_dtype is set for a length input only
            self.length = numpy.zeros(1, dtype=engine._length_dtype)
            self.length_address: int = self.length.ctypes.data
            self.length_shape: list[int] = [1] if length_input.rank == 1 else []
