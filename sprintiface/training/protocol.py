"""The trainer protocol: what sprintiface hands a learner when RASR trains.

RASR's PythonTrainer feeds one segment per call; the session
(:mod:`sprintiface.training.session`) turns each call into a :class:`Segment`
and calls a :class:`Trainer`::

    load_checkpoint(directory, epoch)    # resumed job: before the first start_epoch, last finished epoch
    start_epoch(epoch)                   # before the epoch's first segment
    train_segment(segment)               # every segment (background thread if queue_size > 0)
    forward(segment) -> (T', C)          # criterion-by-sprint: posteriors RASR computes the loss on
    backward(segment, error, error_signal, natural_pairing_type)   # ... then RASR's error signal
    discard(segment)                     # ... or RASR dropped it (finishDiscard)
    end_epoch(epoch)                     # all of the epoch was fed (see below)
    save_checkpoint(directory, epoch)    # after end_epoch, with checkpoint_dir; then epoch.NNN.done
    finish()                             # RASR's exit(): the run is complete
    abort()                              # instead of finish(): the run is not complete

``end_epoch`` comes only for an epoch RASR fed completely (see
:mod:`sprintiface.training.schedule`): a job that dies mid-epoch gets no
``end_epoch``, so no checkpoint claims a half-done epoch.

``finish()`` comes only with RASR's ``exit()`` after a run in which every call
succeeded. Otherwise the trainer gets ``abort()`` once, at the end: after a hook
failed, after RASR fed a segment that was rejected (action train), when a new
``init()`` replaces the session, or when the process ends without ``exit()``
(atexit). Whatever a trainer writes must not look complete after ``abort()``.

Segments arrive one at a time; a learner that trains on batches collects them
in train_segment and flushes in end_epoch / finish. Calls come from one thread
at a time, in order. A segment of criterion-by-sprint gets ``forward`` and then
either ``backward`` or ``discard`` before the next ``forward`` (a segment still
waiting at RASR's exit() gets ``discard``).

A trainer class with ``writes_model = True`` takes the config key ``model`` as
the prefix of what it writes (checkpoints, exports), so the session loads no
ONNX model from it.

A trainer class with ``needs_segments = True`` (the default; ``trainer:dump`` and
``trainer:torch``) gets whole, named segments only: a call with ``segmentName``
None — what RASR's nn-trainer sends without ``buffer-type = utterance``, shuffled
mini-batches of frames across segments — is refused by the session with a
ConfigError naming ``buffer-type = utterance`` and ``shuffle = false``, before the
trainer sees it. A trainer that learns from frame batches sets it to False.

Choose the trainer with ``trainer:<name>`` (built in: ``dump``, ``torch``) or
``trainer:package.module:factory``; the factory is called as
``factory(config=, input_dim=, output_dim=, target_mode=)`` plus, if its
signature takes them (by name or ``**kwargs``), ``engine=``,
``allow_downsampling=``, ``cuda_enabled=`` and ``cuda_active_gpu=``.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy

from sprintiface.config import Config
from sprintiface.errors import ConfigError, TrainerError

if TYPE_CHECKING:
    from sprintiface.engine import OnnxEngine


@dataclass
class Segment:
    """One segment as RASR fed it, time-major.

    Every array is the trainer's own (a copy: RASR reuses its buffers once a
    call returns), so a trainer may keep segments for batching.
    ``features``: float32 (T, input_dim), C order, finite. ``alignment``:
    uint32 (T,) class indices or None. ``weights``: float32 (T,) or None.
    Strings are None where RASR gave none. ``epoch``: the epoch this segment
    belongs to.
    """

    name: Optional[str]
    features: numpy.ndarray
    epoch: int
    alignment: Optional[numpy.ndarray] = None
    orthography: Optional[str] = None
    weights: Optional[numpy.ndarray] = None
    speaker_name: Optional[str] = None
    speaker_gender: Optional[str] = None

    @property
    def num_frames(self) -> int:
        return int(self.features.shape[0])


class Trainer:
    """Base class of trainers; every hook but train_segment does nothing by default.

    ``engine`` is the ONNX engine when the config names a model (onnx/model), else None;
    the default :meth:`forward` serves criterion-by-sprint from it. ``cuda_enabled`` and
    ``cuda_active_gpu`` are what RASR's init passed (cudaEnabled, cudaActiveGpu);
    ``allow_downsampling`` whether forward may return fewer frames than it got.
    """

    #: Whether config key ``model`` names what this trainer writes, not a model to load.
    writes_model: bool = False
    #: Whether this trainer needs RASR's whole, named segments (nn-trainer with
    #: ``buffer-type = utterance``, ``shuffle = false``). True: the session refuses a
    #: call with ``segmentName`` None (a shuffled mini-batch of frames) with a
    #: ConfigError. False: such calls reach the trainer, as a Segment named None.
    needs_segments: bool = True

    def __init__(self, config: Config, input_dim: int, output_dim: int, target_mode: str,
                 engine: Optional[OnnxEngine] = None, *,
                 allow_downsampling: bool = False, cuda_enabled: bool = False, cuda_active_gpu: int = -1):
        self.config = config
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.target_mode = target_mode
        self.engine = engine
        self.allow_downsampling = allow_downsampling
        self.cuda_enabled = cuda_enabled
        self.cuda_active_gpu = cuda_active_gpu

    def start_epoch(self, epoch: int) -> None:
        pass

    def train_segment(self, segment: Segment) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement train_segment")

    def forward(self, segment: Segment) -> numpy.ndarray:
        """Posteriors p(c|x), float32 (T', output_dim) (T' < T only for downsampling models)."""
        if self.engine is None:
            raise TrainerError(
                f"trainer {type(self).__name__} has no model to compute posteriors for criterion-by-sprint; "
                f"give onnx:<path> (or model/epoch), or use a trainer that implements forward()")
        from sprintiface.scores import model_posteriors

        return model_posteriors(self.engine, numpy.ascontiguousarray(segment.features), self.config.score_kernel)

    def backward(self, segment: Segment, error: float, error_signal: numpy.ndarray,
                 natural_pairing_type: Optional[str]) -> None:
        """RASR's criterion result for the last forward(): ``error_signal`` float32 (T, output_dim),
        the gradient w.r.t. the softmax input when ``natural_pairing_type == "softmax"``."""

    def discard(self, segment: Segment) -> None:
        """criterion-by-sprint: RASR dropped the segment of the last forward() (finishDiscard)."""

    def end_epoch(self, epoch: int) -> None:
        pass

    def save_checkpoint(self, directory: str, epoch: int) -> None:
        pass

    def load_checkpoint(self, directory: str, epoch: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        """The run ends incomplete (a hook failed, a fed segment was rejected, a new
        init() came, or the process ends without RASR's exit()): release resources
        and leave nothing that looks complete."""


#: Trainers that come with sprintiface, by their ``trainer`` name.
BUILT_IN: dict[str, str] = {
    "dump": "sprintiface.training.dump:DumpTrainer",
    "torch": "sprintiface.training.torch_trainer:TorchTrainer",
}


def trainer_factory(config: Config) -> Callable[..., Trainer]:
    """The factory (usually a Trainer subclass) ``config.trainer`` names: a built-in
    name or ``package.module:factory``."""
    name = config.trainer
    target = BUILT_IN.get(name, name)
    if ":" not in target:
        raise ConfigError(f"config key 'trainer': expected one of {', '.join(BUILT_IN)} or "
                          f"package.module:factory; got {name!r}")
    module_name, factory_name = target.split(":", 1)
    try:
        factory: Callable[..., Trainer] = getattr(importlib.import_module(module_name), factory_name)
        return factory
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"config key 'trainer': cannot load {name!r}: {error}") from None


def make_trainer(config: Config, input_dim: int, output_dim: int, target_mode: str,
                 engine: Optional[OnnxEngine] = None, **rasr_options: Any) -> Trainer:
    """The trainer ``config.trainer`` names (see :func:`trainer_factory`).

    ``rasr_options``: ``allow_downsampling``, ``cuda_enabled``, ``cuda_active_gpu``
    from RASR's init; passed on to factories whose signature takes them.
    """
    name = config.trainer
    factory = trainer_factory(config)
    offered = dict(engine=engine, **rasr_options)
    try:
        parameters = inspect.signature(factory).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        extra = {key: value for key, value in offered.items() if takes_all or key in parameters}
    except (TypeError, ValueError):  # no signature to read: the four documented keywords only
        extra = {}
    trainer = factory(config=config, input_dim=input_dim, output_dim=output_dim, target_mode=target_mode, **extra)
    if not isinstance(trainer, Trainer):
        raise ConfigError(f"config key 'trainer': {name!r} made a {type(trainer).__name__}, "
                          f"expected a sprintiface.training.Trainer")
    if trainer.engine is None:
        trainer.engine = engine
    return trainer
