"""The ONNX Runtime engine: one inference session for a frame-synchronous acoustic model.

Every caller (the feature scorer, the trainer's forwarding, the command line)
gets its engine from :meth:`OnnxEngine.from_config`: one session per model and
session setting per process. What the model takes and gives, and the cut of
its final softmax, are :mod:`sprintiface.graph`'s; this module only runs it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import Dict, Optional

import numpy

from sprintiface import onnx_wire, plan
from sprintiface.config import Config, resolve_model_path
from sprintiface.errors import ModelError
from sprintiface.plan import LENGTH_DTYPES, ModelInterface

#: Frames of the warm-up run at load time (so the first segment is not slow).
WARMUP_FRAMES = 16


def session_options(intra_op_threads: int = 1, inter_op_threads: int = 1):
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


def packing_target() -> Dict[str, object]:
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


def _trimming_run_options():
    import onnxruntime

    options = onnxruntime.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def _prepare_in_memory(path, input_name, output_name, length_name, output_kind):
    """A plain model, prepared at load: ``(interface, model)``, the ``onnx.ModelProto``
    with the weights still in the file: each big initializer is an external-data
    reference to its bytes in ``path`` (sprintiface.onnx_wire), read by nobody yet.
    Only this path imports onnx."""
    try:
        import onnx

        from sprintiface import graph
    except ImportError:
        raise ModelError(
            f"ONNX model {path!r} is not prepared, and preparing it at load needs the onnx package: "
            f"pip install 'sprintiface[onnx]', or prepare it once with `sprintiface prepare {path} -o OUT` "
            f"(then only onnxruntime is needed)") from None
    if not weights_stay_in_the_file():
        # This onnxruntime cannot take external weights for a model given as bytes: the
        # whole model is parsed (read privately) and handed over (held twice while loading).
        model = onnx.load(path)
        interface = graph.prepare(model, path, input_name, output_name, length_name, output_kind)
        return interface, model
    try:
        model = onnx.load_from_string(onnx_wire.graph_without_weights(path))
    except ModelError:
        raise
    except Exception as error:  # onnx raises DecodeError and others
        raise ModelError(f"ONNX model {path!r} cannot be read: {error}") from None
    interface = graph.prepare(model, path, input_name, output_name, length_name, output_kind)
    return interface, model


#: Offsets of the weights in a file ONNX Runtime maps: multiples of a page.
_PAGE = 4096
#: Bytes copied per read while copying or hashing weights.
_CHUNK = 1 << 22


def _graphs(graph) -> "list":
    """``graph`` and the bodies of its control-flow nodes, at any depth."""
    found, pending = [], [graph]
    while pending:
        current = pending.pop()
        found.append(current)
        for node in current.node:
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    pending.append(attribute.g)
                pending.extend(attribute.graphs)
    return found


class _Weight:
    """One initializer whose bytes are elsewhere: ``length`` bytes at ``offset`` of ``source``."""

    __slots__ = ("tensor", "source", "offset", "length")

    def __init__(self, tensor, source: str, offset: int, length: int):
        self.tensor, self.source, self.offset, self.length = tensor, source, offset, length

    def point_to(self, location: str, offset: int) -> None:
        del self.tensor.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(self.length))):
            self.tensor.external_data.add(key=key, value=value)


def _external_weights(model, path: str) -> "list":
    """The initializers of ``model`` (a plain model prepared at load: its big ones point
    into the user's file, others may point into the user's own data files) whose
    bytes are in a file, as :class:`_Weight`; a reference outside the model's
    directory or past a file's end is a ModelError naming both."""
    import onnx

    directory = os.path.dirname(os.path.realpath(path))
    weights = []
    for graph in _graphs(model.graph):
        for tensor in graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            entries = {entry.key: entry.value for entry in tensor.external_data}
            location = entries.get("location", "")
            source = os.path.join(directory, location)
            if not location or os.path.isabs(location) or ".." in location.replace("\\", "/").split("/"):
                raise ModelError(f"ONNX model {path!r}: initializer {tensor.name!r} has its data in "
                                 f"{location!r}, expected a file in the model's directory {directory!r}")
            try:
                offset = int(entries.get("offset", "0") or 0)
                size = os.stat(source).st_size
                length = int(entries["length"]) if entries.get("length") else size - offset
            except (OSError, ValueError) as error:
                raise ModelError(f"ONNX model {path!r}: the data of initializer {tensor.name!r} "
                                 f"({location!r}) cannot be read: {error}") from None
            if offset < 0 or length < 0 or offset + length > size:
                raise ModelError(f"ONNX model {path!r}: initializer {tensor.name!r} expects {length} bytes at "
                                 f"offset {offset} of {source!r}, which has {size} (truncated?)")
            weights.append(_Weight(tensor, source, offset, length))
    return weights


class _Sources:
    """The files weights are copied from, each opened once for ``pread`` and closed at the end."""

    def __init__(self):
        self._handles: Dict[str, int] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for handle in self._handles.values():
            os.close(handle)

    def chunks(self, weight: _Weight):
        """The bytes of ``weight``, in pieces of at most _CHUNK (read privately, never mapped)."""
        handle = self._handles.get(weight.source)
        if handle is None:
            handle = self._handles[weight.source] = os.open(weight.source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        done = 0
        while done < weight.length:
            chunk = os.pread(handle, min(_CHUNK, weight.length - done), weight.offset + done)
            if not chunk:
                raise ModelError(f"{weight.source!r} ended while its weights were read (written to meanwhile?)")
            done += len(chunk)
            yield chunk


def _private_roots() -> "list":
    """Where the weights of one load may be copied for ONNX Runtime to take, best first:
    tmpfs (/dev/shm), so that nothing goes to disk, then the temp folder."""
    roots = []
    for base in ("/dev/shm", tempfile.gettempdir()):
        if os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            try:
                roots.append(_own_directory(os.path.join(base, f"sprintiface-{os.getuid()}")))
            except OSError:
                pass
    return roots


def _private_root() -> str:
    """The first of :func:`_private_roots` (OSError when there is none)."""
    roots = _private_roots()
    if not roots:
        raise OSError("no writable folder for the weights of a load (tried /dev/shm and the temp folder)")
    return roots[0]


def weights_cache_directory() -> str:
    """The node-local cache of plain models' weights for ``share_weights:true``:
    ``$SPRINTIFACE_CACHE_DIR``, else ``/var/tmp/sprintiface-<uid>``, else the temp folder's."""
    configured = os.environ.get("SPRINTIFACE_CACHE_DIR")
    if configured:
        return _own_directory(configured)
    base = "/var/tmp" if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK | os.X_OK) \
        else tempfile.gettempdir()
    return _own_directory(os.path.join(base, f"sprintiface-{os.getuid()}"))


def _own_directory(path: str) -> str:
    """``path``, made (mode 0700) when missing; OSError unless it is a real directory of this user."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{path!r} is not a directory of this user")
    return path


def _copy_privately(weights, work: str) -> None:
    """Copy each weight into a file of its own in ``work`` and point the tensor there.

    One file per tensor: ONNX Runtime maps each, packs what it packs into its own
    memory and unmaps that; the folder is removed right after the session is made,
    so a tensor's copy lives exactly as long as a mapping of it (the packed ones'
    go at once) and nothing is held twice.
    """
    with _Sources() as sources:
        for index, weight in enumerate(weights):
            name = f"w{index}"
            handle = os.open(os.path.join(work, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            try:
                position = 0
                for chunk in sources.chunks(weight):
                    os.pwrite(handle, chunk, position)
                    position += len(chunk)
            finally:
                os.close(handle)
            weight.point_to(name, 0)


def _layout(weights) -> "list":
    """Offsets of the weights in one file, each at a page (so ONNX Runtime can map it)."""
    offsets, position = [], 0
    for weight in weights:
        position += (-position) % _PAGE
        offsets.append(position)
        position += weight.length
    return offsets


def _hash_weights(weights, offsets, sources, write=None) -> str:
    """SHA-256 of the file the weights make laid out at ``offsets`` (zeros between);
    with ``write(position, bytes)``, the bytes are written too, in the same pass."""
    import hashlib

    digest, position = hashlib.sha256(), 0
    for weight, offset in zip(weights, offsets):
        digest.update(bytes(offset - position))
        position = offset
        for chunk in sources.chunks(weight):
            digest.update(chunk)
            if write is not None:
                write(position, chunk)
            position += len(chunk)
    return digest.hexdigest()


def _cached_weights(weights, path: str) -> str:
    """The node's content-addressed, read-only copy of the weights (see docs/cluster.md),
    made when missing; points the tensors there and returns its folder.

    The copy is named by the SHA-256 of its bytes, written once under a temporary
    name (locked; a dead writer's is removed by the next), made mode 0444 and
    renamed: nothing ever writes a file of this name again, so every process
    that maps it maps the same bytes, whatever happens to the user's file.
    """
    from sprintiface import _files

    cache = weights_cache_directory()
    offsets = _layout(weights)
    total = offsets[-1] + weights[-1].length if weights else 0
    with _Sources() as sources:
        digest = _hash_weights(weights, offsets, sources)
        final = os.path.join(cache, f"{digest}.data")
        if not _is_complete(final, total):
            with _files.exclusive_lock(os.path.join(cache, f".{digest}.lock")):
                if not _is_complete(final, total):
                    _files.remove_stale_temporaries(final)
                    handle, temporary = _files.create_temporary(final)
                    try:
                        written = _hash_weights(weights, offsets, sources,
                                                lambda position, chunk: os.pwrite(handle, chunk, position))
                        os.ftruncate(handle, total)
                        os.fsync(handle)
                        os.fchmod(handle, 0o444)
                        if written != digest:
                            raise ModelError(f"ONNX model {path!r} changed while it was loaded; load it again")
                        os.replace(temporary, final)
                    except BaseException:
                        with contextlib.suppress(OSError):
                            os.unlink(temporary)
                        raise
                    finally:
                        os.close(handle)
    for weight, offset in zip(weights, offsets):
        weight.point_to(os.path.basename(final), offset)
    return cache


def _is_complete(path: str, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


def weights_stay_in_the_file() -> bool:
    """Whether this onnxruntime reads the external data of a model given as bytes from a
    folder it is told (session.model_external_initializers_file_folder_path): 1.21 and later."""
    import onnxruntime

    try:
        major, minor = (int(part) for part in onnxruntime.__version__.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (1, 21)


def _check_prepared(interface: ModelInterface, input_name, output_name, length_name, output_kind) -> None:
    """A prepared model serves what its plan says: config keys that ask for something else are errors."""
    asked = {"input_name": (input_name, interface.feature_input.name),
             "output_name": (output_name, interface.output.name),
             "length_name": (length_name, interface.length_input.name if interface.length_input else None),
             "output_kind": (None if output_kind == "auto" else output_kind, interface.output_kind)}
    for key, (given, planned) in asked.items():
        if given is not None and given != planned:
            raise ModelError(f"ONNX model {interface.path!r} was prepared with {key} {planned!r}, but the config "
                             f"asks for {given!r}: prepare it again with that setting")


def _check_session(session, interface: ModelInterface) -> None:
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


def _share_in_place(options) -> None:
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


def _new_session(source, path: str, options):
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ModelError(f"ONNX Runtime cannot load {path!r}: {error}") from None


class OnnxEngine:
    """One ONNX Runtime session plus what is needed to feed it RASR's frames.

    ``interface`` (sprintiface.plan.ModelInterface) says what is fed and read;
    ``kind`` is what :meth:`forward` and :meth:`run_into` give (the served
    output kind: ``logits`` when a final softmax was cut), ``logit_bias`` a cut
    bias the score kernel adds (float32 (C,)) or None.
    """

    _cache: Dict[tuple, "OnnxEngine"] = {}
    _cache_lock = threading.Lock()

    def __init__(self, path: str, *, intra_op_threads: int = 1, inter_op_threads: int = 1,
                 input_name: Optional[str] = None, output_name: Optional[str] = None,
                 length_name: Optional[str] = None, output_kind: str = "auto", share_weights: bool = False):
        self.path = path
        options = session_options(intra_op_threads, inter_op_threads)
        metadata = onnx_wire.read_metadata(path)
        #: Whether the model was prepared (``sprintiface prepare``): loaded with onnxruntime alone.
        self.prepared = plan.PLAN_KEY in metadata
        #: The file of weights this session maps (sprintiface's own: a prepared model's
        #: ``OUT.<id>.data`` or the node's cached copy), or None.
        self.weights_file: Optional[str] = None
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

    def _load_plain(self, path: str, model, options, share_weights: bool):
        """The session of a plain model whose weights are in files (see _prepare_in_memory):
        the weights are copied out of them first, so that ONNX Runtime maps only copies
        that are sprintiface's own (docs/cluster.md) and never the user's files.

        ``share_weights``: the node's content-addressed read-only copy, used in place
        (shared by the node's processes; one copy on the node). Else a private copy
        per tensor in a scratch folder removed right after the session is made:
        ONNX Runtime packs from it into its own memory, what it keeps unpacked stays
        mapped from the (then unlinked) copy; the process holds each weight once.
        """
        from sprintiface import _files
        from sprintiface.log import logger

        weights = _external_weights(model, path)
        if not weights:
            return _new_session(model.SerializeToString(), path, options)
        if share_weights:
            _share_in_place(options)
            try:
                folder = _cached_weights(weights, path)
            except OSError as error:
                logger.warning("%s: the node's shared copy of its weights cannot be written (%s): it is loaded "
                               "privately, not shared between processes; set SPRINTIFACE_CACHE_DIR to a writable "
                               "node-local folder", path, error)
            else:
                self.weights_file = os.path.join(folder, weights[0].tensor.external_data[0].value)
                options.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
                return _new_session(model.SerializeToString(), path, options)
        failures = []
        for root in _private_roots():
            root = os.path.join(root, "load")
            _files.remove_stale_scratch(root)
            with _files.scratch_directory(root) as work:
                try:
                    _copy_privately(weights, work)
                except OSError as error:  # a full /dev/shm (containers have 64 MB): the next folder
                    failures.append(f"{work!r}: {error}")
                    continue
                options.add_session_config_entry("session.model_external_initializers_file_folder_path", work)
                return _new_session(model.SerializeToString(), path, options)
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
    def from_config(cls, config: Config) -> "OnnxEngine":
        """The process-wide engine for the model and session settings ``config`` names
        (``onnx`` or ``model``/``epoch``; names, ``output_kind``, threads); made on first use."""
        path = resolve_model_path(config)
        options = dict(intra_op_threads=config.intra_op_threads, inter_op_threads=config.inter_op_threads,
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
            return output.shape[1]
        except ModelError as error:
            raise ModelError(f"{error}; the model does not run on {WARMUP_FRAMES} frames: an export that "
                             f"baked its example length into the graph runs at that length only") from None

    def _feeds(self, frames: numpy.ndarray) -> dict:
        feeds = {self.interface.feature_input.name: frames[None] if self.batched else frames}
        if self._length_dtype is not None:
            length = numpy.array([frames.shape[0]] if self.interface.length_input.rank == 1 else frames.shape[0],
                                 dtype=self._length_dtype)
            feeds[self.interface.length_input.name] = length
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

    def new_binding(self) -> "Binding":
        """An IOBinding for :meth:`run_into` (one per caller; bindings are not thread-safe)."""
        return Binding(self)

    def run_into(self, binding: "Binding", frames_address: int, num_frames: int, out_address: int) -> None:
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
                binding.length[0] = num_frames
                io.bind_input(self.interface.length_input.name, "cpu", 0, self._length_dtype,
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

    def __init__(self, engine: OnnxEngine):
        self.io = engine.session.io_binding()
        #: (frames address, frames, output address) of what is bound, or None.
        self.bound = None
        #: Give ONNX Runtime's arena back to the system at the end of the next run.
        self.trim_arena = False
        self.length = None
        if engine._length_dtype is not None:
            self.length = numpy.zeros(1, dtype=engine._length_dtype)
            self.length_address = self.length.ctypes.data
            self.length_shape = [1] if engine.interface.length_input.rank == 1 else []
