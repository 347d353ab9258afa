"""The torch trainer (``trainer:torch``): RASR's segments train a PyTorch acoustic model.

``pip install 'sprintiface[torch]'``. Config keys: ``model_file`` (the user's
Python file), ``model`` (the prefix of what is written), ``learning_rate``,
``max_seqs``, ``max_frames``, ``accum_grad_multiple_step``, ``torch_threads``,
``onnx_exporter``, ``distributed_timeout``.

The model file defines ``get_model(epoch)``: a ``torch.nn.Module`` mapping
features float32 (B, T, F) (zero past each length) and lengths int32 (B,) to
logits (B, T, C). It may define ``get_optimizer(model)`` (an optimizer, or
``(optimizer, scheduler)``; the scheduler steps once per epoch),
``train_step(model, batch, epoch)`` (a scalar loss tensor from a
:class:`Batch`) and ``get_learning_rate(epoch)`` (set at every epoch start).
Each is called with keyword arguments, only those its signature names (or all
with ``**kwargs``): ``get_model(epoch, step)``, ``get_optimizer(model,
learning_rate, epoch)``, ``train_step(model, batch, epoch, step)``,
``get_learning_rate(epoch, learning_rate)``; ``step`` counts optimizer steps.

What is trained, by RASR target mode:

- target-alignment (and target-generic when every segment has an alignment):
  mini-batches of up to ``max_seqs`` segments and ``max_frames`` padded frames,
  frame-wise cross-entropy on the alignment times RASR's frame weights, summed
  over the batch's frames and divided by their number; Adam at
  ``learning_rate`` unless get_optimizer says otherwise;
- target-segment-orth, unsupervised (and target-generic without alignments):
  the model file's ``train_step``, which is required;
- criterion-by-sprint: ``forward`` runs the model with autograd and gives RASR
  the posteriors; RASR's error signal goes back through the logits
  (naturalPairingType "softmax": the signal is d criterion / d logits) or the
  posteriors (None), divided by the segment's frames; ``discard`` drops the
  graph (in a distributed run it back-propagates zeros, so every process runs
  the same collectives);
- forward-only: posteriors of the model in eval mode.

The optimizer steps after ``accum_grad_multiple_step`` mini-batches
(criterion-by-sprint: segments), with the gradients averaged over them, and at
every epoch end with what was accumulated. After every epoch the trainer
writes ``<model>.<epoch:03d>.pt`` (model, optimizer and scheduler state) and
``<model>.<epoch:03d>.onnx`` (:mod:`sprintiface.training.torch_export`), which
the scorer loads with ``model:<model>,epoch:<epoch>``: first the .pt, then the
.onnx, each complete or absent, so an epoch with both files is finished. A
restarted job with the same config resumes from ``<model>.<last finished
epoch>.pt`` (model, optimizer, scheduler, step count, RNG state): the last
epoch with both files, or with ``checkpoint_dir`` the last one the session
marked done there (:mod:`sprintiface.training.schedule`). Nothing is written
of a model or optimizer state with a NaN or an infinity (TrainerError naming
the tensor), and a non-finite loss, or RASR's error or errorSignal at
finishError, is refused at once (TrainerError naming the segments). With
WORLD_SIZE > 1 in the environment the processes train together
(:mod:`sprintiface.training.torch_distributed`, config key
``distributed_timeout``) and process 0 writes the files.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import math
import os
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, TypeVar

import numpy

try:
    import torch
except ImportError as _error:  # a clear word instead of "No module named torch"
    raise ImportError("trainer 'torch' needs PyTorch: pip install 'sprintiface[torch]'") from _error

from sprintiface._files import remove_stale_temporaries
from sprintiface.config import Config
from sprintiface.errors import ConfigError, TrainerError
from sprintiface.log import logger
from sprintiface.training.protocol import Segment, Trainer
from sprintiface.training.torch_distributed import ProcessGroup, parameter_digest
from sprintiface.training.torch_export import check_finite_state, export_onnx, read_checkpoint, write_checkpoint

if TYPE_CHECKING:
    from sprintiface.engine import OnnxEngine

#: What each function of the user's model code is offered (by keyword); get_model is required.
USER_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "get_model": ("epoch", "step"),
    "get_optimizer": ("model", "learning_rate", "epoch"),
    "train_step": ("model", "batch", "epoch", "step"),
    "get_learning_rate": ("epoch", "learning_rate"),
}


def _takes_two_arguments(function: Callable[..., Any]) -> bool:
    """Whether ``function(a, b)`` binds (True when its signature cannot be read)."""
    try:
        inspect.signature(function).bind(None, None)
    except TypeError:
        return False
    except ValueError:
        return True
    return True


@contextlib.contextmanager
def _folder_importable(folder: str) -> Iterator[None]:
    """``folder`` at the end of sys.path while the block runs, and gone again after it.

    The user's file is loaded with its folder importable, so that its top-level imports
    find its neighbours (as when it runs as a script); the process's sys.path is left as it
    was, so nothing else RASR or sprintiface imports later resolves into the user's folder.
    A neighbour imported while loading stays in sys.modules; one imported only when a
    function runs is not found (import it at the top of the file)."""
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):  # the user's code removed it itself
                sys.path.remove(folder)


class UserModelCode:
    """The user's Python file (config key ``model_file``) and the functions it defines.

    The file is run as a module of its own, under a name made from its real path, without
    changing the process's sys.path: its folder is importable only while the file runs
    (:func:`_folder_importable`). Which keywords each function takes is read once, here.
    Failures while loading it raise ConfigError, failures of its functions TrainerError,
    both naming the file.
    """

    def __init__(self, path: Optional[str]):
        if not path:
            raise ConfigError("trainer 'torch' needs config key 'model_file': a Python file defining "
                              "get_model(epoch) -> torch.nn.Module")
        if not os.path.isfile(path):
            raise ConfigError(f"config key 'model_file': no such file {path!r} (working directory {os.getcwd()!r})")
        self.path = path
        self.module = self._load(path)
        self.functions: dict[str, Callable[..., Any]] = {}
        #: Per function, the offered keywords it takes; None: all of them (``**kwargs``, or no signature).
        self._keywords: dict[str, Optional[frozenset[str]]] = {}
        for function_name, offered in USER_FUNCTIONS.items():
            function = getattr(self.module, function_name, None)
            if function is None:
                continue
            if not callable(function):
                raise ConfigError(f"model_file {path!r}: {function_name} is a {type(function).__name__}, "
                                  f"expected a function")
            self._keywords[function_name] = self._check_parameters(function_name, function, offered)
            self.functions[function_name] = function
        if "get_model" not in self.functions:
            raise ConfigError(f"model_file {path!r} defines no get_model(epoch): the function that returns the "
                              f"torch.nn.Module to train")

    @staticmethod
    def _load(path: str) -> types.ModuleType:
        """The module of the file at ``path``; ConfigError with the traceback if it fails to run."""
        real = os.path.realpath(path)
        name = "sprintiface_model_file_" + hashlib.sha1(real.encode("utf-8")).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, real)
        if spec is None or spec.loader is None:
            raise ConfigError(f"model_file {path!r}: Python cannot load it as a module (expected a .py file)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up there
        try:
            with _folder_importable(os.path.dirname(real)):
                spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[name]
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            raise ConfigError(f"model_file {path!r} failed to load:\n{text}") from error
        return module

    def _check_parameters(self, name: str, function: Callable[..., Any],
                          offered: tuple[str, ...]) -> Optional[frozenset[str]]:
        """The offered keywords ``function`` takes (None: all); ConfigError if it requires another."""
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        for parameter in parameters:
            required = parameter.default is inspect.Parameter.empty and \
                parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY, parameter.POSITIONAL_ONLY)
            if required and (parameter.name not in offered or parameter.kind is parameter.POSITIONAL_ONLY):
                raise ConfigError(f"model_file {self.path!r}: {name}() takes parameter {parameter.name!r}, which "
                                  f"sprintiface does not give; it calls {name} with the keywords "
                                  f"{', '.join(offered)} (declare the ones you need)")
        if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
            return None
        return frozenset(parameter.name for parameter in parameters)

    def has(self, name: str) -> bool:
        return name in self.functions

    def call(self, name: str, **offered: Any) -> Any:
        """``name(**the offered keywords its signature takes)``; TrainerError naming the file if it raises."""
        function, keywords = self.functions[name], self._keywords[name]
        if keywords is not None:
            offered = {key: value for key, value in offered.items() if key in keywords}
        try:
            return function(**offered)
        except Exception as error:
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            raise TrainerError(f"{name}() in model_file {self.path!r} failed:\n{text}") from error


@dataclass
class Batch:
    """A padded mini-batch of segments (what ``train_step`` gets), on the trainer's device.

    ``features`` float32 (B, T, F), zero past each length; ``lengths`` int32 (B,);
    ``mask`` bool (B, T), True on real frames; ``alignment`` int64 (B, T) class
    indices (0 past each length) when every segment has one, else None;
    ``weights`` float32 (B, T): RASR's frame weights, 1 where RASR gave none, 0
    past each length; ``segments``: the :class:`Segment` objects (names,
    orthographies, speakers).
    """

    features: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    alignment: Optional[torch.Tensor]
    weights: torch.Tensor
    segments: list[Segment] = field(repr=False)

    @property
    def num_frames(self) -> int:
        return int(sum(segment.num_frames for segment in self.segments))


def collate(segments: list[Segment], device: torch.device) -> Batch:
    """The padded :class:`Batch` of ``segments``, longest first (equal lengths in the order fed):
    ``lengths`` is non-increasing, as ``pack_padded_sequence(enforce_sorted=True)`` requires."""
    # sorted here, not in Batcher: which segments make a batch stays as it was, only their rows move
    segments = sorted(segments, key=lambda segment: -segment.num_frames)
    lengths = numpy.array([segment.num_frames for segment in segments], dtype=numpy.int32)
    size, frames, dim = len(segments), int(lengths.max()), segments[0].features.shape[1]
    features = numpy.zeros((size, frames, dim), dtype=numpy.float32)
    weights = numpy.zeros((size, frames), dtype=numpy.float32)
    aligned = all(segment.alignment is not None for segment in segments)
    alignment = numpy.zeros((size, frames), dtype=numpy.int64)
    for index, segment in enumerate(segments):
        count = segment.num_frames
        features[index, :count] = segment.features
        weights[index, :count] = 1.0 if segment.weights is None else segment.weights
        if segment.alignment is not None:
            alignment[index, :count] = segment.alignment
    mask = numpy.arange(frames)[None, :] < lengths[:, None]

    def tensor(array: numpy.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device, non_blocking=True)

    return Batch(tensor(features), tensor(lengths), tensor(mask), tensor(alignment) if aligned else None,
                 tensor(weights), segments)


class Batcher:
    """Groups segments, in the order they come, into mini-batches of at most ``max_seqs``
    segments and ``max_frames`` padded frames (segments x the longest); a segment longer
    than ``max_frames`` is a batch of its own."""

    def __init__(self, max_seqs: int, max_frames: int):
        self.max_seqs, self.max_frames = max_seqs, max_frames
        self.pending: list[Segment] = []
        self._longest = 0

    def add(self, segment: Segment) -> list[list[Segment]]:
        """Take ``segment``; returns the batches that are complete now (none, one or two)."""
        done = []
        count = len(self.pending) + 1
        if self.pending and (count > self.max_seqs or count * max(self._longest, segment.num_frames) > self.max_frames):
            done.append(self.take())
        self.pending.append(segment)
        self._longest = max(self._longest, segment.num_frames)
        if len(self.pending) >= self.max_seqs:
            done.append(self.take())
        return done

    def take(self) -> list[Segment]:
        """The segments collected so far (the batch they make), and an empty batch started."""
        segments, self.pending, self._longest = self.pending, [], 0
        return segments


def batches(segments: Iterable[Segment], max_seqs: int, max_frames: int) -> Iterator[list[Segment]]:
    """The mini-batches the torch trainer makes of ``segments`` (see :class:`Batcher`)."""
    batcher = Batcher(max_seqs, max_frames)
    for segment in segments:
        yield from batcher.add(segment)
    if batcher.pending:
        yield batcher.take()


@dataclass
class EpochStats:
    """What one epoch trained (this process): logged at its end, kept as ``last_epoch_stats``."""

    segments: int = 0
    frames: int = 0
    loss: float = 0.0  # summed over frames (the default loss, or RASR's error)
    errors: int = 0  # frames whose best class is not the alignment's (default loss only)
    batches: int = 0
    started: float = field(default_factory=time.perf_counter)
    training_seconds: float = 0.0  # from start_epoch to the files (incl. waiting for the other processes)
    files_seconds: float = 0.0  # writing the checkpoint and the export (process 0), and telling the others


def _names(segments: list[Segment], shown: int = 4) -> str:
    names = ", ".join(repr(segment.name) for segment in segments[:shown])
    return f"segment{'s' if len(segments) > 1 else ''} {names}" + (", ..." if len(segments) > shown else "")


def _check_rasr_error(segment: Segment, error: float, error_signal: numpy.ndarray) -> None:
    """TrainerError unless RASR's ``error`` and ``error_signal`` (T', C) of finishError are finite."""
    finite = numpy.isfinite(error_signal)
    if not finite.all():
        frame, label = (int(i) for i in numpy.argwhere(~finite)[0])
        raise TrainerError(
            f"finishError for segment {segment.name!r}: RASR's errorSignal is not finite at frame {frame}, class "
            f"{label} (value {error_signal[frame, label]}; {int((~finite).sum())} of {finite.size} values are not "
            f"finite), error {error}. Expected finite numbers: back-propagating it would make every weight NaN. "
            f"RASR's criterion gave NaN or infinity for this segment: a posterior of 0 under the criterion (log 0), "
            f"an alignment or orthography the criterion cannot reach, or non-finite posteriors from the model")
    if not math.isfinite(error):
        raise TrainerError(
            f"finishError for segment {segment.name!r}: RASR's error is {error}; expected a finite number (RASR's "
            f"criterion gave NaN or infinity for this segment: a posterior of 0 under the criterion, or an "
            f"alignment or orthography the criterion cannot reach)")


T = TypeVar("T")


def _built(value: Optional[T], what: str) -> T:
    """``value``, which the first start_epoch made: TrainerError for a call before it."""
    if value is None:
        raise TrainerError(f"torch trainer: no {what} yet; RASR's first segment starts the epoch that builds it")
    return value


class Scheduler(Protocol):
    """What get_optimizer may return beside the optimizer: stepped once per epoch, and kept in
    the checkpoints (a ``torch.optim.lr_scheduler`` scheduler is one)."""

    def step(self) -> object: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> object: ...


class TorchTrainer(Trainer):
    """``trainer:torch`` (see the module docstring for the contract)."""

    writes_model = True

    def __init__(self, config: Config, input_dim: int, output_dim: int, target_mode: str,
                 engine: Optional[OnnxEngine] = None, *,
                 allow_downsampling: bool = False, cuda_enabled: bool = False, cuda_active_gpu: int = -1):
        super().__init__(config, input_dim, output_dim, target_mode, engine, allow_downsampling=allow_downsampling,
                         cuda_enabled=cuda_enabled, cuda_active_gpu=cuda_active_gpu)
        if not config.model:
            raise ConfigError("trainer 'torch' needs config key 'model': the prefix of what it writes after every "
                              "epoch, <model>.<epoch:03d>.pt and <model>.<epoch:03d>.onnx")
        self.user_code = UserModelCode(config.model_file)
        if target_mode in ("target-segment-orth", "unsupervised") and not self.user_code.has("train_step"):
            raise ConfigError(
                f"target mode {target_mode} gives no frame targets, and the torch trainer's default loss is "
                f"frame-wise cross-entropy on alignments: define train_step(model, batch, epoch) -> loss in "
                f"model_file {config.model_file!r}")
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        use_cuda = cuda_enabled and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{max(cuda_active_gpu, 0)}" if use_cuda else "cpu")
        self.accumulate = config.accum_grad_multiple_step
        self.group: Optional[ProcessGroup] = ProcessGroup.from_environment(self.device, config.distributed_timeout)
        #: The user's module; ``network`` is what is called (DistributedDataParallel around it, or itself).
        self.model: Optional[torch.nn.Module] = None
        self.network: Optional[torch.nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler: Optional[Scheduler] = None
        self.epoch: Optional[int] = None
        self.step = 0  # optimizer steps so far
        self._accumulated = 0  # mini-batches (segments) in the gradients since the last step
        self._epoch_batches = 0
        self._batcher = Batcher(config.max_seqs, config.max_frames)
        #: criterion-by-sprint: (segment, logits, posteriors) awaiting backward/discard.
        self._pending: Optional[tuple[Segment, torch.Tensor, torch.Tensor]] = None
        self._stats = EpochStats()
        #: The last finished epoch's figures (segments, frames, loss, seconds of training and of files).
        self.last_epoch_stats: Optional[EpochStats] = None
        logger.info("torch trainer: model file %s, writes %s.NNN.pt/.onnx, device %s, %d threads%s",
                    config.model_file, config.model, self.device, torch.get_num_threads(),
                    f", process {self.group.rank} of {self.group.world_size}" if self.group else "")

    # -- the model -----------------------------------------------------------------

    @property
    def built_model(self) -> torch.nn.Module:
        """The user's module, once the first start_epoch built (or resumed) it."""
        return _built(self.model, "model")

    @property
    def built_network(self) -> torch.nn.Module:
        """What is called: the module in DistributedDataParallel, or the module itself."""
        return _built(self.network, "network")

    @property
    def built_optimizer(self) -> torch.optim.Optimizer:
        return _built(self.optimizer, "optimizer")

    @property
    def is_main(self) -> bool:
        """Whether this process writes the files (process 0, or the only one)."""
        return self.group is None or self.group.is_main

    def path(self, epoch: int, extension: str) -> str:
        """``<model>.<epoch:03d>.<extension>``."""
        return f"{self.config.model}.{epoch:03d}.{extension}"

    def _build(self, epoch: int) -> None:
        """The model of ``get_model`` on the device, and its optimizer (and scheduler)."""
        code = self.user_code
        model = code.call("get_model", epoch=epoch, step=self.step)
        if not isinstance(model, torch.nn.Module):
            raise TrainerError(f"get_model() in model_file {code.path!r} returned a {type(model).__name__}, "
                               f"expected a torch.nn.Module")
        if not _takes_two_arguments(model.forward):
            raise TrainerError(f"the model of get_model() in model_file {code.path!r} ({type(model).__name__}) "
                               f"cannot be called as forward(features, lengths): sprintiface passes the features "
                               f"(B, T, F) and their lengths, int32 (B,); give forward a lengths parameter")
        model.to(self.device)
        if not any(parameter.requires_grad for parameter in model.parameters()):
            raise TrainerError(f"the model of get_model() in model_file {code.path!r} has no trainable parameters")
        optimizer, scheduler = None, None
        if code.has("get_optimizer"):
            made = code.call("get_optimizer", model=model, learning_rate=self.config.learning_rate, epoch=epoch)
            optimizer, scheduler = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TrainerError(f"get_optimizer() in model_file {code.path!r} returned {type(made).__name__}; "
                                   f"expected a torch.optim.Optimizer or (optimizer, scheduler)")
            if scheduler is not None and not callable(getattr(scheduler, "step", None)):
                raise TrainerError(f"get_optimizer() in model_file {code.path!r}: the scheduler "
                                   f"({type(scheduler).__name__}) has no step()")
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=self.config.learning_rate)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def _check_logits(self, logits: object, frames: int, size: int, exact: bool = True) -> None:
        ok = isinstance(logits, torch.Tensor) and logits.dim() == 3 and logits.shape[0] == size and \
            logits.shape[2] == self.output_dim and (logits.shape[1] == frames if exact else logits.shape[1] <= frames)
        if not ok:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise TrainerError(
                f"the model of model_file {self.user_code.path!r} gave {shape} for features of shape "
                f"({size}, {frames}, {self.input_dim}); expected logits (B={size}, T={frames}, "
                f"C=outputDim={self.output_dim})" + ("" if exact else " (fewer frames only with allowDownsampling)"))

    # -- epochs ----------------------------------------------------------------------

    def load_checkpoint(self, directory: str, epoch: int) -> None:
        """Resume after ``epoch`` (marked done in ``directory``) from ``<model>.<epoch:03d>.pt``."""
        self._resume(epoch, f"checkpoint_dir {directory!r} marks epoch {epoch} finished")

    def _resume(self, epoch: int, why: str) -> None:
        """Model, optimizer, scheduler, step count and RNG state from ``<model>.<epoch:03d>.pt``."""
        path = self.path(epoch, "pt")
        state = read_checkpoint(path, self.device, why)
        self.step = int(state["step"])
        self._build(epoch + 1)
        try:
            self.built_model.load_state_dict(state["model"])
            self.built_optimizer.load_state_dict(state["optimizer"])
            if (self.scheduler is None) != (state["scheduler"] is None):
                raise ValueError(f"the checkpoint has {'no ' if state['scheduler'] is None else 'a '}scheduler "
                                 f"state, get_optimizer() {'no' if self.scheduler is None else 'a'} scheduler")
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise TrainerError(f"checkpoint {path!r} does not fit the model and optimizer of model_file "
                               f"{self.user_code.path!r}: {error}") from None
        torch.set_rng_state(state["rng"].cpu())
        logger.info("torch trainer: resumed from %s (after epoch %d, %d optimizer steps)", path, epoch, self.step)

    def start_epoch(self, epoch: int) -> None:
        """The first epoch builds the model, or (a later first epoch without a checkpoint_dir
        resume: start_epoch, or the epoch after the last with both files) continues from
        ``<model>.<epoch - 1:03d>.pt``."""
        if self.model is None and epoch > 1:
            why = "start_epoch" if self.config.start_epoch is not None else \
                f"after the last finished epoch, whose {self.path(epoch - 1, 'pt')} and .onnx exist"
            self._resume(epoch - 1, f"the run starts at epoch {epoch} ({why}) and continues from epoch {epoch - 1}")
        elif self.model is None:
            self._build(epoch)
        if self.network is None:
            self.network = self.group.wrap(self.built_model) if self.group else self.built_model
        self.epoch = epoch
        if self.user_code.has("get_learning_rate"):
            rate = self.user_code.call("get_learning_rate", epoch=epoch, learning_rate=self.config.learning_rate)
            try:
                rate = float(rate)
            except (TypeError, ValueError):
                raise TrainerError(f"get_learning_rate() in model_file {self.user_code.path!r} returned "
                                   f"{rate!r}; expected a number") from None
            for group in self.built_optimizer.param_groups:
                group["lr"] = rate
        self._stats = EpochStats()
        self._epoch_batches = 0
        if self.group:
            self.group.begin_epoch(self.built_network)

    def end_epoch(self, epoch: int) -> None:
        """Train what is left, step, make the processes identical, write the .pt and the .onnx."""
        if self._batcher.pending:
            self._train_batch(collate(self._batcher.take(), self.device))
        if self._pending is not None:
            self.discard(self._pending[0])
        if self._accumulated:
            self._optimizer_step()
        digest = None
        if self.group:
            self.group.end_epoch()
            self._share_state(self.group.most_trained_rank(self._epoch_batches))
            digest = self.group.check_identical(self.built_model, epoch)
        if self.scheduler is not None:
            self.scheduler.step()
        stats = self._stats
        stats.training_seconds = time.perf_counter() - stats.started
        failure = None
        if self.is_main:
            try:
                self._write_epoch_files(epoch)
            except Exception as error:
                failure = error
        if self.group:
            text = self.group.outcome_of_main(None if failure is None else f"{type(failure).__name__}: {failure}")
            if text is not None and failure is None:
                raise TrainerError(f"process 0 failed to write epoch {epoch}'s files: {text}")
        if failure is not None:
            raise failure
        stats.files_seconds = time.perf_counter() - stats.started - stats.training_seconds
        self.last_epoch_stats = stats
        self._log_epoch(epoch, digest)

    def _write_epoch_files(self, epoch: int) -> None:
        """``<model>.NNN.pt``, then ``<model>.NNN.onnx``, each complete or absent; both exist only
        once the epoch is done (a restarted job without checkpoint_dir resumes after the last
        epoch with both). Nothing is written of a model or optimizer state that is not finite."""
        checkpoint, export = self.path(epoch, "pt"), self.path(epoch, "onnx")
        state = self._state(epoch)
        check_finite_state(state, f"after epoch {epoch} (neither {checkpoint} nor {export} is written)",
                           buffers=[name for name, _ in self.built_model.named_buffers()])
        for path in (checkpoint, export):
            for leftover in remove_stale_temporaries(path):
                logger.info("torch trainer: removed %s, left by a process that was killed while writing", leftover)
        with contextlib.suppress(FileNotFoundError):  # an earlier attempt's: the .pt comes first
            os.unlink(export)
        write_checkpoint(checkpoint, state)
        export_onnx(self.built_model, export, self.input_dim, self.config.onnx_exporter)

    def save_checkpoint(self, directory: str, epoch: int) -> None:
        """Nothing more to write: end_epoch wrote ``<model>.<epoch:03d>.pt`` (the session's
        done marker in ``directory`` follows)."""

    def _state(self, epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "step": self.step, "model": self.built_model.state_dict(),
                "optimizer": self.built_optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "rng": torch.get_rng_state()}

    def _share_state(self, source: int) -> None:
        """Every process takes the model, optimizer and scheduler state of process ``source``."""
        group, epoch = _built(self.group, "process group"), _built(self.epoch, "epoch")
        state = group.share_state(self._state(epoch) if group.rank == source else None, source)
        if group.rank != source:
            self.built_model.load_state_dict(state["model"])
            self.built_optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])

    def _log_epoch(self, epoch: int, digest: Optional[str]) -> None:
        stats = self._stats
        measure = "criterion" if self.target_mode == "criterion-by-sprint" else "loss"
        text = f"{measure} {stats.loss / stats.frames:.4f}/frame" if stats.frames else "nothing fed"
        if stats.frames and self.target_mode != "criterion-by-sprint" and not self.user_code.has("train_step"):
            text += f", frame error rate {100.0 * stats.errors / stats.frames:.2f}% (training mode)"
        written = f"wrote {self.path(epoch, 'pt')} and .onnx" if self.is_main else "wrote nothing (process 0 writes)"
        logger.info("torch trainer: epoch %d done: %d segments, %d frames, %s, %.0f frames/s, lr %g, %d steps; "
                    "%s in %.2f s%s", epoch, stats.segments, stats.frames, text,
                    stats.frames / max(stats.training_seconds, 1e-9), self.built_optimizer.param_groups[0]["lr"],
                    self.step, written, stats.files_seconds,
                    f"; parameters sha256 {digest[:16]} on all {self.group.world_size} processes"
                    if digest and self.group else "")

    def parameter_digest(self) -> str:
        """SHA-256 of the model's parameters and buffers."""
        return parameter_digest(self.built_model)

    # -- training on alignments (and train_step) ------------------------------------

    def train_segment(self, segment: Segment) -> None:
        if segment.alignment is None and not self.user_code.has("train_step"):
            raise TrainerError(
                f"segment {segment.name!r} ({self.target_mode}) has no alignment, and the torch trainer's default "
                f"loss is frame-wise cross-entropy on alignments: define train_step(model, batch, epoch) -> loss "
                f"in model_file {self.user_code.path!r}")
        for segments in self._batcher.add(segment):
            self._train_batch(collate(segments, self.device))

    def _train_batch(self, batch: Batch) -> None:
        self.built_network.train()
        if self.user_code.has("train_step"):
            loss = self.user_code.call("train_step", model=self.network, batch=batch, epoch=self.epoch,
                                        step=self.step)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                raise TrainerError(f"train_step() in model_file {self.user_code.path!r} returned "
                                   f"{type(loss).__name__}{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}"
                                   f"; expected a scalar loss tensor that requires grad")
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainerError(f"train_step() in model_file {self.user_code.path!r} returned the loss {value} "
                                   f"for the mini-batch of {_names(batch.segments)} (epoch {self.epoch}, step "
                                   f"{self.step}); expected a finite number: nothing of the epoch is written")
            self._stats.loss += value * batch.num_frames
        else:
            loss = self._frame_cross_entropy(batch)
        torch.autograd.backward(loss / self.accumulate)
        self._stats.segments += len(batch.segments)
        self._stats.frames += batch.num_frames
        self._mini_batch_done()

    def _frame_cross_entropy(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy per real frame times its weight, summed, over the number of real frames."""
        size, frames = batch.features.shape[:2]
        logits = self.built_network(batch.features, batch.lengths)
        self._check_logits(logits, frames, size)
        if batch.alignment is None:  # train_segment takes a segment without one only for train_step
            raise TrainerError(f"the mini-batch of {_names(batch.segments)} has no alignment for the frame-wise "
                               f"cross-entropy")
        real = logits[batch.mask]
        targets = batch.alignment[batch.mask]
        weighted = torch.nn.functional.cross_entropy(real, targets, reduction="none") * batch.weights[batch.mask]
        total = weighted.sum()
        with torch.no_grad():
            value = float(total.detach())
            if not math.isfinite(value):
                raise TrainerError(f"the cross-entropy of the mini-batch of {_names(batch.segments)} is {value} "
                                   f"(epoch {self.epoch}, step {self.step}): the model's outputs are not finite "
                                   f"(training diverged? lower learning_rate); nothing of the epoch is written")
            self._stats.loss += value
            self._stats.errors += int((real.argmax(dim=-1) != targets).sum())
        mean: torch.Tensor = total / max(real.shape[0], 1)
        return mean

    def _mini_batch_done(self) -> None:
        self._accumulated += 1
        self._epoch_batches += 1
        self._stats.batches += 1
        if self._accumulated >= self.accumulate:
            self._optimizer_step()

    def _optimizer_step(self) -> None:
        if self._accumulated < self.accumulate:  # an epoch's remainder: average over what there is
            scale = self.accumulate / self._accumulated
            for parameter in self.built_model.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(scale)
        self.built_optimizer.step()
        self.built_optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._accumulated = 0

    # -- criterion-by-sprint and forwarding -----------------------------------------

    def _segment_tensors(self, segment: Segment) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.from_numpy(segment.features).to(self.device)[None]
        return features, torch.tensor([segment.num_frames], dtype=torch.int32, device=self.device)

    def forward(self, segment: Segment) -> numpy.ndarray:
        """Posteriors float32 (T', C). criterion-by-sprint: in training mode, the graph kept for
        backward/discard; otherwise in eval mode, without a graph."""
        features, lengths = self._segment_tensors(segment)
        if self.target_mode != "criterion-by-sprint":
            module = self.built_model
            module.eval()
            try:
                with torch.no_grad():
                    logits = module(features, lengths)
            finally:
                module.train()
            self._check_logits(logits, segment.num_frames, 1, exact=not self.allow_downsampling)
            evaluated: numpy.ndarray = torch.softmax(logits[0], dim=-1).cpu().numpy()
            return evaluated
        self.built_network.train()
        logits = self.built_network(features, lengths)
        self._check_logits(logits, segment.num_frames, 1, exact=not self.allow_downsampling)
        logits = logits[0]
        posteriors = torch.softmax(logits, dim=-1)
        self._pending = (segment, logits, posteriors)
        kept: numpy.ndarray = posteriors.detach().cpu().numpy()
        return kept

    def backward(self, segment: Segment, error: float, error_signal: numpy.ndarray,
                 natural_pairing_type: Optional[str]) -> None:
        """Back-propagate RASR's ``error_signal`` float32 (T', C) of the criterion summed over frames,
        divided by T' (and by accum_grad_multiple_step); step when due."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] is not segment:
            raise TrainerError(f"backward for segment {segment.name!r} without its forward")
        _check_rasr_error(segment, error, error_signal)
        _, logits, posteriors = pending
        if natural_pairing_type == "softmax":
            target = logits  # the signal is d criterion / d logits (RASR: softmax minus Kronecker delta)
        elif natural_pairing_type is None:
            target = posteriors  # the signal is d criterion / d posteriors
        else:
            raise TrainerError(f"finishError for segment {segment.name!r}: naturalPairingType "
                               f"{natural_pairing_type!r}; the torch trainer takes 'softmax' (the error signal is "
                               f"the gradient w.r.t. the logits) or None (w.r.t. the posteriors)")
        frames = logits.shape[0]
        signal = torch.from_numpy(error_signal).to(self.device)
        torch.autograd.backward(target, signal / (frames * self.accumulate))
        self._stats.segments += 1
        self._stats.frames += frames
        self._stats.loss += float(error)
        self._mini_batch_done()

    def discard(self, segment: Segment) -> None:
        """Drop the graph of the last forward. In a distributed run, back-propagate zeros instead
        (a mini-batch that contributes nothing), so that every process runs the same collectives."""
        pending, self._pending = self._pending, None
        if pending is not None and self.group is not None:
            logits = pending[1]
            torch.autograd.backward(logits, torch.zeros_like(logits))
            self._mini_batch_done()

    # -- the end -------------------------------------------------------------------------

    def finish(self) -> None:
        """Leave the process group. What was fed of an epoch that did not end is dropped:
        no file claims a half-done epoch."""
        self._release()

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        self._pending = None
        self._batcher.take()
        if self.group is not None:
            self.group.close()
