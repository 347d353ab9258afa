"""RASR's PythonTrainer and PythonSegmentOrdering calls, as one process sees them.

RASR calls ``getSegmentList`` (python-segment-order) long before anything
else, then ``init(inputDim=, outputDim=, allowDownsampling=, config=,
targetMode=, cudaEnabled=, cudaActiveGpu=)`` lazily with the first segment,
one ``feedInput*`` per segment (features float32 (inputDim, T), Fortran
order), and ``exit()``. The module-level names in :mod:`sprintiface` delegate
to the process's :class:`TrainingProcess`, which holds the epoch schedule the
segment ordering made and the :class:`TrainingSession` init started.

Actions (``action`` in pymod-config, required as in RETURNN):

- ``forward``: feedInputForwarding / feedInput return the model's posteriors,
  float32 (outputDim, T) in Fortran order (a transposed view of a (T, C)
  array: RASR takes it without a copy);
- ``train``: segments go to the trainer (:mod:`sprintiface.training.protocol`),
  on a background thread behind a bounded queue when ``queue_size > 0`` (not
  for criterion-by-sprint, which needs the posteriors at once). A failure there
  is raised as TrainerError at RASR's next call;
- ``nop``: every call is accepted and counted; feedInput returns uniform posteriors.

A trainer that needs whole segments (``Trainer.needs_segments``, the default)
never gets a call without a segment name: RASR sends ``segmentName`` None only
for frame mini-batches (nn-trainer without ``buffer-type = utterance``), and the
first such call is refused with a ConfigError naming ``buffer-type = utterance``
and ``shuffle = false``. ``nop`` and ``forward`` (no trainer) accept them: the
posteriors of a frame batch are well-defined for a frame-synchronous model.

Epochs come from the schedule (:mod:`sprintiface.training.schedule`): each
segment is located in it by name; an epoch ends (``end_epoch``, checkpoint,
done marker) when a segment of a later epoch arrives or at exit() once the
generator handed all of it out. Every process goes through every epoch of the
schedule: epochs it was fed nothing of (another corpus partition's; before its
first segment, between two, or handed out after its last) start and end empty,
so that trainers of several processes meet at every epoch end. Without
sprintiface's segment ordering the whole run is one epoch, complete at exit().

The trainer gets ``finish()`` only at RASR's exit() after a run in which no
hook failed and no fed segment was refused (action train); otherwise
``abort()``: also when the process ends without exit() (atexit; no epoch is
completed then) or a new init() replaces the session. Every array a trainer
gets is its own copy. Each segment is logged at INFO on the 'sprintiface'
logger (configured from ``log_level`` here and at getSegmentList).
"""
from __future__ import annotations

import atexit
import functools
import os
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy

from sprintiface._checks import checked_int
from sprintiface.config import Config, load_config
from sprintiface.errors import ConfigError, FeatureError, ProtocolError, SprintifaceError, TrainerError
from sprintiface.log import TRAINER_SEGMENT_LEVEL, configure_logging, logger
from sprintiface.training.protocol import Segment, Trainer, make_trainer, trainer_factory
from sprintiface.training.schedule import EpochSchedule, done_marker, first_epoch, last_finished_epoch

if TYPE_CHECKING:
    from sprintiface.engine import OnnxEngine

TARGET_MODES = ("criterion-by-sprint", "target-generic", "target-alignment", "target-segment-orth",
                "unsupervised", "forward-only")


#: Why a call without a segment name is refused for a trainer that needs segments. RASR's
#: nn-trainer sends segmentName None only when it buffers frames, not utterances: its
#: default (no buffer-type = utterance) is shuffled mini-batches of 1024 frames drawn
#: across segments, which would train on something else without a word.
FRAME_BATCH_REFUSED = (
    "segment None: RASR fed a mini-batch of frames without a segment name (target mode {mode}), but "
    "trainer {trainer} needs whole segments: nn-trainer's default buffering shuffles frames across "
    "segments. Set `buffer-type = utterance` and `shuffle = false` in the nn-trainer's config "
    "(docs/training.md); action nop and action forward accept frame batches")


def _check_target_mode(mode: object, what: str) -> str:
    if not isinstance(mode, str) or mode not in TARGET_MODES:
        raise ConfigError(f"{what}: expected one of {', '.join(TARGET_MODES)}, got {mode!r}")
    return mode


class TrainingProcess:
    """What one RASR process's training calls share: the epoch schedule the segment
    ordering made, the session init started, RETURNN's target-mode override and
    the last config seen (for get_final_epoch)."""

    def __init__(self) -> None:
        self.schedule: Optional[EpochSchedule] = None
        self.session: Optional[TrainingSession] = None
        self.config: Optional[Config] = None
        self.target_mode_override: Optional[str] = None

    def segment_list(self, corpus_name: object, segment_list: Any, segments_info: Any,
                     config: object) -> Iterator[str]:
        """getSegmentList: a generator over the segment names of every epoch."""
        from sprintiface.segment_order import make_schedule

        if config is not None and not isinstance(config, str):
            raise ProtocolError(f"getSegmentList: expected config to be the python-segment-order-config string, "
                                f"got {type(config).__name__}")
        parsed = load_config(config)
        configure_logging(parsed)
        self.config = parsed
        self.schedule = schedule = make_schedule(segment_list, segments_info, parsed)
        logger.info("segment order for corpus %r: %d segments, epochs %d..%d, %s", corpus_name,
                    len(schedule.names), schedule.first, schedule.last, parsed.seq_ordering)
        return iter(schedule)

    def start(self, inputDim: object, outputDim: object, config: object, targetMode: object,  # noqa: N803 - RASR's
              allowDownsampling: object = 0, cudaEnabled: object = 0, cudaActiveGpu: Any = -1,  # noqa: N803 - names
              **kwargs: Any) -> None:
        """RASR's init with ``name`` None: start this process's session (closing one that runs)."""
        if self.session is not None:
            previous, self.session = self.session, None
            previous.close(complete=False)
        if isinstance(allowDownsampling, (bool, int, numpy.integer)) and allowDownsampling in (0, 1):
            allow = bool(allowDownsampling)  # RASR passes an int
        else:
            raise ProtocolError(f"init: expected allowDownsampling to be 0 or 1, got {allowDownsampling!r}")
        mode = _check_target_mode(self.target_mode_override or targetMode, "targetMode")
        self.session = TrainingSession(inputDim, outputDim, config, mode, allow_downsampling=allow,
                                       cuda_enabled=bool(cudaEnabled), cuda_active_gpu=cudaActiveGpu,
                                       schedule=self.schedule)
        self.config = self.session.config

    def require_session(self) -> TrainingSession:
        if self.session is None:
            raise ProtocolError("a PythonTrainer call came before init(inputDim=..., outputDim=..., ...)")
        return self.session

    def exit(self) -> None:
        """RASR's exit(): complete the epoch, drain and finish. Safe when no session was started."""
        if self.session is not None:
            current, self.session = self.session, None
            current.close(complete=True)

    def set_target_mode(self, mode: str) -> None:
        """Override RASR's targetMode (RETURNN's set_target_mode)."""
        self.target_mode_override = _check_target_mode(mode, "target mode")
        if self.session is not None:
            self.session.target_mode = mode
            if self.session.trainer is not None:
                self.session.trainer.target_mode = mode

    def final_epoch(self) -> int:
        if self.config is None:
            raise ProtocolError("get_final_epoch() before init() or getSegmentList(): no config yet")
        return self.config.num_epochs


class TrainingSession:
    """State of one RASR PythonTrainer run (see the module docstring)."""

    def __init__(self, input_dim: object, output_dim: object, config: object, target_mode: str,
                 allow_downsampling: bool = False, cuda_enabled: bool = False, cuda_active_gpu: int = -1,
                 schedule: Optional[EpochSchedule] = None):
        self.input_dim = checked_int(input_dim, "inputDim", where="init", minimum=1)
        self.output_dim = checked_int(output_dim, "outputDim", where="init", minimum=1)
        self.config: Config = self._parsed_config(config)
        configure_logging(self.config)
        self.target_mode = _check_target_mode(target_mode, "targetMode")
        self.allow_downsampling = allow_downsampling
        self.action: str = self._checked_action(target_mode)
        self.engine: Optional[OnnxEngine] = self._load_engine()
        self.trainer: Optional[Trainer] = None
        if self.action == "train":
            self.trainer = make_trainer(self.config, self.input_dim, self.output_dim, target_mode, self.engine,
                                        allow_downsampling=allow_downsampling, cuda_enabled=cuda_enabled,
                                        cuda_active_gpu=cuda_active_gpu)
        self.schedule = schedule
        #: The epoch of every segment when no schedule places them.
        self.default_epoch = schedule.first if schedule is not None else first_epoch(self.config)
        self.segments = 0
        self.frames = 0
        self.epoch: Optional[int] = None
        self._epoch_open = False
        self._pending: Optional[Segment] = None
        self._pending_frames = 0
        #: A hook's exception: the trainer gets no more calls but abort().
        self._failure: Optional[BaseException] = None
        #: Why a segment RASR fed never reached the trainer (action train): the run cannot complete.
        self._rejected: Optional[str] = None
        self._closed = False
        self._queue: Optional[queue.Queue[Optional[Callable[[], None]]]] = None
        self._worker: Optional[threading.Thread] = None
        self._start_worker()
        # RASR may end without exit(): the trainer still gets abort() (nothing looks complete).
        atexit.register(self._close_at_exit)
        logger.info("trainer session: action %s, target mode %s, %d -> %d, trainer %s", self.action,
                    target_mode, self.input_dim, self.output_dim,
                    type(self.trainer).__name__ if self.trainer else "none")

    @staticmethod
    def _parsed_config(config: object) -> Config:
        """init's ``config``: the pymod-config string (or None), or a Config already parsed."""
        if isinstance(config, Config):
            return config
        if config is not None and not isinstance(config, str):
            raise ProtocolError(f"init: expected config to be the pymod-config string, got {type(config).__name__}")
        return load_config(config)

    def _checked_action(self, target_mode: str) -> str:
        """The config's ``action``, which is required, and fits ``target_mode``."""
        action = self.config.action
        if action is None:
            raise ConfigError("config key 'action' is required for the trainer: forward, train or nop")
        if action == "forward" and target_mode not in ("criterion-by-sprint", "forward-only"):
            raise ConfigError(f"action forward needs target-mode criterion-by-sprint or forward-only, "
                              f"got {target_mode!r}")
        return action

    def _load_engine(self) -> Optional[OnnxEngine]:
        """The ONNX model the config names (checked against the dimensions), or None.

        A trainer that writes ``model`` (its checkpoints and exports) loads no ONNX model from it."""
        writes_model = self.action == "train" and getattr(trainer_factory(self.config), "writes_model", False)
        if not writes_model and (self.config.onnx or self.config.model):
            from sprintiface.engine import OnnxEngine

            engine = OnnxEngine.from_config(self.config)
            engine.check_dims(self.input_dim, self.output_dim)
            return engine
        if self.action == "forward":
            raise ConfigError("action forward needs a model: onnx:<path>, or model:<prefix> with epoch:<n>")
        return None

    def _start_worker(self) -> None:
        """The trainer's background thread behind a bounded queue, when ``queue_size > 0`` (not for
        criterion-by-sprint, which needs the posteriors at once)."""
        if self.trainer is not None and self.config.queue_size > 0 and self.target_mode != "criterion-by-sprint":
            self._queue = queue.Queue(maxsize=self.config.queue_size)
            self._worker = threading.Thread(target=self._work, name="sprintiface-trainer", daemon=True)
            self._worker.start()

    # -- the trainer's thread ---------------------------------------------------

    def _work(self) -> None:
        tasks = self._queue
        assert tasks is not None  # the worker is started with its queue
        while True:
            task = tasks.get()
            try:
                if task is None:
                    return
                if self._failure is None:
                    task()
            except BaseException as error:  # surfaced at RASR's next call
                self._failure = error
            finally:
                tasks.task_done()

    def _run(self, task: Callable[[], None]) -> None:
        """Run ``task`` on the trainer: queued to the worker, or here."""
        self._check_failure()
        if self._queue is not None:
            self._queue.put(task)
            return
        try:
            task()
        except BaseException as error:
            self._failure = error
            self._check_failure()

    def _check_failure(self) -> None:
        if self._failure is not None:
            error = self._failure
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            where = "background thread" if self._worker is not None else "hook"
            raise TrainerError(f"trainer {type(self.trainer).__name__}: its {where} failed:\n{text}") from error
        if self._rejected is not None:
            raise TrainerError(f"trainer {type(self.trainer).__name__}: {self._rejected}, so this run cannot "
                               f"complete (the trainer gets abort() at the end); start a new one with init()")

    def _reject(self, segment_name: object, error: BaseException) -> None:
        """A segment RASR fed was refused: with a trainer, the run can no longer be complete."""
        if self.trainer is not None and self._rejected is None:
            self._rejected = f"segment {segment_name!r} was rejected ({type(error).__name__}: {error})"

    # -- segments ---------------------------------------------------------------

    def segment(self, features: Any, weights: Any, segment_name: object, **targets: Any) -> Segment:
        """Check RASR's arrays and copy them into a time-major Segment the trainer owns."""
        self._check_failure()
        if self._closed:
            raise ProtocolError(f"segment {segment_name!r} came after exit()")
        try:
            return self._checked_segment(features, weights, segment_name, targets)
        except SprintifaceError as error:
            self._reject(segment_name, error)
            raise

    def _checked_segment(self, features: Any, weights: Any, segment_name: object,
                         targets: dict[str, Any]) -> Segment:
        if segment_name is not None and not isinstance(segment_name, str):
            raise FeatureError(f"expected segmentName to be a str or None, got {type(segment_name).__name__}")
        if segment_name is None and self.trainer is not None and getattr(self.trainer, "needs_segments", True):
            raise ConfigError(FRAME_BATCH_REFUSED.format(trainer=type(self.trainer).__name__,
                                                          mode=self.target_mode))
        if not isinstance(features, numpy.ndarray) or features.ndim != 2 or features.shape[0] != self.input_dim:
            shape = getattr(features, "shape", type(features).__name__)
            raise FeatureError(f"segment {segment_name!r}: expected features of shape (inputDim={self.input_dim}, "
                               f"T), got {shape}")
        if features.dtype != numpy.float32:
            raise FeatureError(f"segment {segment_name!r}: expected float32 features, got {features.dtype}")
        _check_finite(features.T, segment_name, "features")
        num_frames = features.shape[1]
        if weights is not None:
            if not isinstance(weights, numpy.ndarray) or weights.shape != (num_frames,) or \
                    weights.dtype != numpy.float32:
                got = f"{weights.dtype} {weights.shape}" if isinstance(weights, numpy.ndarray) else \
                    type(weights).__name__
                raise FeatureError(f"segment {segment_name!r}: expected float32 weights of shape ({num_frames},) "
                                   f"or None, got {got}")
            _check_finite(weights[:, None], segment_name, "weights")
            weights = weights.copy()
        alignment = targets.get("alignment")
        if alignment is not None:
            if not isinstance(alignment, numpy.ndarray) or alignment.ndim != 1 or alignment.shape[0] != num_frames:
                raise FeatureError(f"segment {segment_name!r}: expected an alignment of {num_frames} frames, "
                                   f"got shape {getattr(alignment, 'shape', type(alignment).__name__)}")
            if alignment.dtype.kind not in "ui":
                raise FeatureError(f"segment {segment_name!r}: expected integer (uint32) alignment class indices, "
                                   f"got {alignment.dtype}")
            if alignment.size and (int(alignment.max()) >= self.output_dim or int(alignment.min()) < 0):
                frame = int(numpy.argmax((alignment >= self.output_dim) | (alignment < 0)))
                raise FeatureError(f"segment {segment_name!r}: alignment class {int(alignment[frame])} at frame "
                                   f"{frame} is outside [0, outputDim={self.output_dim})")
            alignment = alignment.astype(numpy.uint32)  # a copy
        for key in ("orthography", "speaker_name", "speaker_gender"):
            value = targets.get(key)
            if value is not None and not isinstance(value, str):
                raise FeatureError(f"segment {segment_name!r}: expected {key} to be a str or None, "
                                   f"got {type(value).__name__}")
        epoch = self.schedule.locate(segment_name) if self.schedule is not None else self.default_epoch
        # Copies: RASR reuses its arrays once the call returns, and trainers keep segments.
        return Segment(segment_name, numpy.array(features.T, order="C"), epoch, alignment,
                       targets.get("orthography"), weights, targets.get("speaker_name"),
                       targets.get("speaker_gender"))

    def _log_segment(self, segment: Segment, what: str) -> None:
        """The one line per segment, at :data:`~sprintiface.log.TRAINER_SEGMENT_LEVEL`, on RASR's stderr."""
        logger.log(TRAINER_SEGMENT_LEVEL, "segment %d %r, epoch %d: %d frames, %s", self.segments, segment.name,
                   segment.epoch, segment.num_frames, what)

    # -- epochs -------------------------------------------------------------------

    def _enter_epoch(self, epoch: int) -> None:
        """Make ``epoch`` the open one: end the epochs before it, start it."""
        if self.trainer is None or (self.epoch == epoch and self._epoch_open):
            self.epoch = epoch
            return
        trainer, directory = self.trainer, self.config.checkpoint_dir
        # Epochs of the schedule this process was fed nothing of (another partition's)
        # still start and end, so that every process goes through the same epochs.
        if self._epoch_open and self.epoch is not None:  # an open epoch has its number
            self._end_epoch(self.epoch)
            self._pass_empty_epochs(self.epoch + 1, epoch)
        elif self.epoch is None:
            first = self.schedule.first if self.schedule is not None else epoch
            previous = last_finished_epoch(directory, before=first) if directory else 0
            if directory and previous:
                self._run(lambda: trainer.load_checkpoint(directory, previous))
            self._pass_empty_epochs(first, epoch)
        self.epoch = epoch
        self._epoch_open = True
        logger.info("epoch %d begins", epoch)
        self._run(lambda: trainer.start_epoch(epoch))

    def _pass_empty_epochs(self, first: int, stop: int) -> None:
        """start_epoch and end_epoch (with checkpoint) for epochs ``first .. stop - 1``, fed nothing."""
        trainer = self.trainer
        assert trainer is not None  # epochs are passed for a trainer only
        for skipped in range(first, stop):
            self._run(functools.partial(trainer.start_epoch, skipped))
            self._end_epoch(skipped)

    def _end_epoch(self, epoch: int) -> None:
        """end_epoch, then with checkpoint_dir save_checkpoint and the epoch.NNN.done marker."""
        self._epoch_open = False
        trainer, directory, segments = self.trainer, self.config.checkpoint_dir, self.segments
        assert trainer is not None  # epochs end for a trainer only

        def end() -> None:
            trainer.end_epoch(epoch)
            if directory:
                from sprintiface._files import atomic_write

                os.makedirs(directory, exist_ok=True)
                trainer.save_checkpoint(directory, epoch)
                with atomic_write(done_marker(directory, epoch), "w") as file:
                    file.write(f'{{"epoch": {epoch}, "segments_fed": {segments}}}\n')

        logger.info("epoch %d ends (%d segments fed in this session)", epoch, segments)
        self._run(end)

    # -- the calls ---------------------------------------------------------------

    def train(self, segment: Segment) -> None:
        """Hand a segment with its targets to the trainer (action train), count it otherwise."""
        if self.action == "forward":
            raise ProtocolError(f"segment {segment.name!r}: action forward takes feedInputForwarding/feedInput, "
                                f"not training targets (target mode {self.target_mode})")
        if self.trainer is not None:
            self._enter_epoch(segment.epoch)  # first: an epoch it ends counts the segments before this one
        self.segments += 1
        self.frames += segment.num_frames
        if self.trainer is None:
            self._log_segment(segment, "nothing to do (action nop)")
            return
        trainer = self.trainer
        self._run(lambda: trainer.train_segment(segment))
        self._log_segment(segment, f"to trainer {type(trainer).__name__}")

    def forward(self, segment: Segment) -> numpy.ndarray:
        """feedInputForwarding: posteriors (outputDim, T') float32, Fortran order, for RASR."""
        if self.trainer is not None and self.target_mode == "criterion-by-sprint":
            # the trainer would wait for a finishError that never comes: the segment would be lost
            error = ProtocolError(f"segment {segment.name!r}: target mode criterion-by-sprint takes feedInput "
                                  f"(then finishError or finishDiscard), not feedInputForwarding")
            self._reject(segment.name, error)
            raise error
        return self._forward(segment)

    def _forward(self, segment: Segment) -> numpy.ndarray:
        if self.trainer is not None:
            self._enter_epoch(segment.epoch)
        self.segments += 1
        self.frames += segment.num_frames
        started = time.perf_counter()
        posteriors: numpy.ndarray
        if self.action == "nop":
            posteriors = numpy.full((segment.num_frames, self.output_dim), 1.0 / self.output_dim, numpy.float32)
        elif self.action == "forward":
            from sprintiface.scores import model_posteriors

            assert self.engine is not None  # action forward does not start without a model
            posteriors = model_posteriors(self.engine, segment.features, self.config.score_kernel)
        else:
            posteriors = self._trainer_forward(segment)
        frames = posteriors.shape[0]
        if posteriors.shape[1] != self.output_dim or frames > segment.num_frames or \
                (frames < segment.num_frames and not self.allow_downsampling):
            error = FeatureError(
                f"segment {segment.name!r}: posteriors of shape {posteriors.shape} (T, C) for {segment.num_frames} "
                f"frames and outputDim {self.output_dim}; fewer frames only with allowDownsampling")
            self._reject(segment.name, error)
            raise error
        if self.target_mode != "criterion-by-sprint":
            self._log_segment(segment, f"{frames} posterior frames in {1e3 * (time.perf_counter() - started):.1f} ms")
        transposed: numpy.ndarray = posteriors.T  # (C, T') in Fortran order: RASR takes it without a copy
        return transposed

    def _trainer_forward(self, segment: Segment) -> numpy.ndarray:
        """The trainer's forward (criterion-by-sprint, forward-only with action train); a failure is recorded."""
        if self._queue is not None:  # forward-only with a queued trainer: its updates first
            self._queue.join()
        self._check_failure()
        trainer = self.trainer
        assert trainer is not None  # the action is train
        name = type(trainer).__name__
        try:
            posteriors = trainer.forward(segment)
            if not isinstance(posteriors, numpy.ndarray) or posteriors.ndim != 2:
                raise TrainerError(f"trainer {name}: forward() must return an array (T, outputDim={self.output_dim}); "
                                   f"got {getattr(posteriors, 'shape', type(posteriors).__name__)}")
            return numpy.ascontiguousarray(posteriors, dtype=numpy.float32)
        except BaseException as error:
            self._failure = error
            if isinstance(error, TrainerError):
                raise
            raise TrainerError(f"trainer {name} failed in forward: {type(error).__name__}: {error}") from error

    def forward_for_criterion(self, segment: Segment) -> numpy.ndarray:
        """feedInput in criterion-by-sprint: forward and keep the segment for finishError."""
        if self._pending is not None:
            error = ProtocolError(f"feedInput for segment {segment.name!r} while segment {self._pending.name!r} "
                                  f"still waits for finishError() or finishDiscard()")
            self._reject(segment.name, error)
            raise error
        posteriors = self._forward(segment)
        self._pending = segment
        self._pending_frames = posteriors.shape[1]
        return posteriors

    def finish_error(self, error: object, error_signal: object, natural_pairing_type: object) -> None:
        """RASR's loss and error signal (outputDim, T') for the segment of the last feedInput."""
        self._check_failure()
        pending = self._pending
        if pending is None:
            raise ProtocolError("finishError() without a segment from feedInput() waiting for it")
        expected = (self.output_dim, self._pending_frames)
        if not isinstance(error_signal, numpy.ndarray) or error_signal.shape != expected or \
                error_signal.dtype != numpy.float32:
            got = f"{error_signal.dtype} {error_signal.shape}" if isinstance(error_signal, numpy.ndarray) else \
                type(error_signal).__name__
            raise FeatureError(f"finishError for segment {pending.name!r}: expected a float32 errorSignal of shape "
                               f"{expected} (outputDim, T), got {got}")
        if natural_pairing_type is not None and not isinstance(natural_pairing_type, str):
            raise ProtocolError(f"finishError for segment {pending.name!r}: expected naturalPairingType to be a str "
                                f"(such as 'softmax') or None, got {type(natural_pairing_type).__name__}")
        if isinstance(error, bool) or not isinstance(error, (int, float, numpy.integer, numpy.floating)):
            raise FeatureError(f"finishError for segment {pending.name!r}: expected error to be a number, "
                               f"got {type(error).__name__}")
        loss = float(error)
        self._pending = None
        self._log_segment(pending, f"error {loss:.6g}" + (f" ({natural_pairing_type})" if natural_pairing_type else ""))
        if self.trainer is not None:
            signal = numpy.array(error_signal.T, order="C")  # the trainer's own copy, (T', C)
            trainer = self.trainer
            self._run(lambda: trainer.backward(pending, loss, signal, natural_pairing_type))

    def finish_discard(self) -> None:
        """RASR drops the segment of the last feedInput."""
        self._check_failure()
        pending = self._pending
        if pending is None:
            raise ProtocolError("finishDiscard() without a segment from feedInput() waiting for it")
        self._pending = None
        self._log_segment(pending, "discarded by RASR (finishDiscard)")
        if self.trainer is not None:
            trainer = self.trainer
            self._run(lambda: trainer.discard(pending))

    # -- the end ----------------------------------------------------------------

    def close(self, complete: bool = True) -> None:
        """End the session: the trainer gets finish() or abort(); the thread is drained and joined.

        ``complete`` (RASR's exit()): a segment still waiting for finishError gets
        ``discard``, the open epoch ends properly (end_epoch, checkpoint, marker)
        when the schedule handed all of it out (or there is no schedule), and the
        trainer gets ``finish()``. Otherwise (atexit, a new init), or after a
        failure or a rejected segment, it gets ``abort()``. A failure is raised
        as TrainerError after the thread is joined.
        """
        if self._closed:
            return
        self._closed = True
        complete = complete and self._rejected is None
        try:
            if self.trainer is not None and self._failure is None and complete:
                if self._pending is not None:
                    pending, trainer = self._pending, self.trainer
                    self._pending = None
                    self._run(lambda: trainer.discard(pending))
                epoch = self.epoch if self._epoch_open else None
                if epoch is not None and (self.schedule is None or self.schedule.handed_out(epoch)):
                    self._end_epoch(epoch)
                    if self.schedule is not None:  # later epochs handed out with nothing for this process
                        last = epoch
                        while last < self.schedule.last and self.schedule.handed_out(last + 1):
                            last += 1
                        self._pass_empty_epochs(epoch + 1, last + 1)
                self._run(self.trainer.finish)
        except TrainerError:
            pass  # raised below, after the thread is joined
        finally:
            if self._worker is not None and self._queue is not None:
                self._queue.put(None)
                self._worker.join()
            atexit.unregister(self._close_at_exit)
            if self.trainer is not None and (self._failure is not None or not complete):
                try:
                    self.trainer.abort()
                except Exception:
                    logger.exception("trainer %s failed in abort()", type(self.trainer).__name__)
        rejected, self._rejected = self._rejected, None  # reported once, where it happened
        self._check_failure()
        logger.info("trainer session %s: %d segments, %d frames", "closed" if complete else
                    "abandoned" + (f" ({rejected})" if rejected else " (no exit() from RASR)"),
                    self.segments, self.frames)

    def _close_at_exit(self) -> None:
        try:
            self.close(complete=False)
        except Exception:
            logger.exception("the trainer failed while finishing at exit")


def _check_finite(frames: numpy.ndarray, segment_name: object, what: str) -> None:
    """FeatureError naming the first frame (row of ``frames``) with a NaN or infinity."""
    finite = numpy.isfinite(frames)
    if not finite.all():
        frame, dim = (int(i) for i in numpy.argwhere(~finite)[0])
        raise FeatureError(f"segment {segment_name!r}: {what} are not finite at frame {frame}"
                           f"{f', dimension {dim}' if frames.shape[1] > 1 else ''} "
                           f"(value {frames[frame, dim]}); expected finite numbers")
