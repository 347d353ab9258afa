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

Epochs come from the schedule (:mod:`sprintiface.training.schedule`): each
segment is located in it by name; an epoch ends (``end_epoch``, checkpoint,
done marker) when a segment of a later epoch arrives or at exit() once the
generator handed all of it out. Every process goes through every epoch of the
schedule: epochs it was fed nothing of (another corpus partition's; before its
first segment, between two, or handed out after its last) start and end empty,
so that trainers of several processes meet at every epoch end. Without
sprintiface's segment ordering the whole run is one epoch, complete at exit().
A process that ends without exit() (atexit) finishes the trainer but completes
no epoch.
"""
from __future__ import annotations

import atexit
import os
import queue
import threading
import traceback
from typing import Callable, Optional

import numpy

from sprintiface.config import Config, load_config
from sprintiface.errors import ConfigError, FeatureError, ProtocolError, TrainerError
from sprintiface.log import configure_logging, logger
from sprintiface.training.protocol import Segment, Trainer, make_trainer, trainer_factory
from sprintiface.training.schedule import EpochSchedule, done_marker, first_epoch, last_finished_epoch

TARGET_MODES = ("criterion-by-sprint", "target-generic", "target-alignment", "target-segment-orth",
                "unsupervised", "forward-only")


def _check_target_mode(mode, what: str) -> str:
    if mode not in TARGET_MODES:
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

    def segment_list(self, corpus_name, segment_list, segments_info, config):
        """getSegmentList: a generator over the segment names of every epoch."""
        from sprintiface.segment_order import make_schedule

        parsed = load_config(config)
        configure_logging(parsed)
        self.config = parsed
        self.schedule = schedule = make_schedule(segment_list, segments_info, parsed)
        logger.info("segment order for corpus %r: %d segments, epochs %d..%d, %s", corpus_name,
                    len(schedule.names), schedule.first, schedule.last, parsed.seq_ordering)
        return iter(schedule)

    def start(self, inputDim, outputDim, config, targetMode, allowDownsampling=0,  # noqa: N803
              cudaEnabled=0, cudaActiveGpu=-1, **kwargs) -> None:  # noqa: N803
        """RASR's init with ``name`` None: start this process's session (closing one that runs)."""
        if self.session is not None:
            previous, self.session = self.session, None
            previous.close(complete=False)
        if isinstance(allowDownsampling, bool) or allowDownsampling in (0, 1):
            allow = bool(allowDownsampling)
        else:
            raise ProtocolError(f"init: expected allowDownsampling to be 0 or 1, got {allowDownsampling!r}")
        mode = _check_target_mode(self.target_mode_override or targetMode, "targetMode")
        self.session = TrainingSession(inputDim, outputDim, config, mode, allow_downsampling=allow,
                                       cuda_enabled=bool(cudaEnabled), cuda_active_gpu=cudaActiveGpu,
                                       schedule=self.schedule)
        self.config = self.session.config

    def require_session(self) -> "TrainingSession":
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


def _dimension(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value <= 0:
        raise ProtocolError(f"init: expected {name} to be an integer > 0, got {value!r}")
    return int(value)


class TrainingSession:
    """State of one RASR PythonTrainer run (see the module docstring)."""

    def __init__(self, input_dim, output_dim, config, target_mode: str, allow_downsampling: bool = False,
                 cuda_enabled: bool = False, cuda_active_gpu: int = -1,
                 schedule: Optional[EpochSchedule] = None):
        self.input_dim = _dimension(input_dim, "inputDim")
        self.output_dim = _dimension(output_dim, "outputDim")
        self.config: Config = config if isinstance(config, Config) else load_config(config)
        configure_logging(self.config)
        self.target_mode = _check_target_mode(target_mode, "targetMode")
        self.allow_downsampling = allow_downsampling
        self.action = self.config.action
        if self.action is None:
            raise ConfigError("config key 'action' is required for the trainer: forward, train or nop")
        if self.action == "forward" and target_mode not in ("criterion-by-sprint", "forward-only"):
            raise ConfigError(f"action forward needs target-mode criterion-by-sprint or forward-only, "
                              f"got {target_mode!r}")
        self.engine = None
        # A trainer that writes `model` (its checkpoints and exports) loads no ONNX model from it.
        writes_model = self.action == "train" and getattr(trainer_factory(self.config), "writes_model", False)
        if not writes_model and (self.config.onnx or self.config.model):
            from sprintiface.engine import OnnxEngine

            self.engine = OnnxEngine.from_config(self.config)
            self.engine.check_dims(self.input_dim, self.output_dim)
        elif self.action == "forward":
            raise ConfigError("action forward needs a model: onnx:<path>, or model:<prefix> with epoch:<n>")
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
        self._failure: Optional[BaseException] = None
        self._closed = False
        self._queue: Optional[queue.Queue] = None
        self._worker: Optional[threading.Thread] = None
        if self.trainer is not None and self.config.queue_size > 0 and target_mode != "criterion-by-sprint":
            self._queue = queue.Queue(maxsize=self.config.queue_size)
            self._worker = threading.Thread(target=self._work, name="sprintiface-trainer", daemon=True)
            self._worker.start()
        # RASR may end without exit(): finish what was fed all the same.
        atexit.register(self._close_at_exit)
        logger.info("trainer session: action %s, target mode %s, %d -> %d, trainer %s", self.action,
                    target_mode, self.input_dim, self.output_dim,
                    type(self.trainer).__name__ if self.trainer else "none")

    # -- the trainer's thread ---------------------------------------------------

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            try:
                if task is None:
                    return
                if self._failure is None:
                    task()
            except BaseException as error:  # surfaced at RASR's next call
                self._failure = error
            finally:
                self._queue.task_done()

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

    # -- segments ---------------------------------------------------------------

    def segment(self, features, weights, segment_name, **targets) -> Segment:
        """Check RASR's arrays and copy them into a time-major Segment the trainer owns."""
        self._check_failure()
        if self._closed:
            raise ProtocolError(f"segment {segment_name!r} came after exit()")
        if segment_name is not None and not isinstance(segment_name, str):
            raise FeatureError(f"expected segmentName to be a str or None, got {type(segment_name).__name__}")
        if not isinstance(features, numpy.ndarray) or features.ndim != 2 or features.shape[0] != self.input_dim:
            shape = getattr(features, "shape", type(features).__name__)
            raise FeatureError(f"segment {segment_name!r}: expected features of shape (inputDim={self.input_dim}, "
                               f"T), got {shape}")
        if features.dtype != numpy.float32:
            raise FeatureError(f"segment {segment_name!r}: expected float32 features, got {features.dtype}")
        num_frames = features.shape[1]
        if weights is not None:
            if not isinstance(weights, numpy.ndarray) or weights.shape != (num_frames,) or \
                    weights.dtype.kind != "f":
                raise FeatureError(f"segment {segment_name!r}: expected float weights of shape ({num_frames},), "
                                   f"got {getattr(weights, 'shape', type(weights).__name__)}"
                                   f"{' ' + str(weights.dtype) if isinstance(weights, numpy.ndarray) else ''}")
            weights = weights.astype(numpy.float32)
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
            alignment = alignment.astype(numpy.uint32)
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

    # -- epochs -------------------------------------------------------------------

    def _enter_epoch(self, epoch: int) -> None:
        """Make ``epoch`` the open one: end the epochs before it, start it."""
        if self.trainer is None or (self.epoch == epoch and self._epoch_open):
            self.epoch = epoch
            return
        trainer, directory = self.trainer, self.config.checkpoint_dir
        # Epochs of the schedule this process was fed nothing of (another partition's)
        # still start and end, so that every process goes through the same epochs.
        if self._epoch_open:
            self._end_epoch(self.epoch)
            self._pass_empty_epochs(self.epoch + 1, epoch)
        elif self.epoch is None:
            first = self.schedule.first if self.schedule is not None else epoch
            previous = last_finished_epoch(directory, before=first) if directory else 0
            if previous:
                self._run(lambda: trainer.load_checkpoint(directory, previous))
            self._pass_empty_epochs(first, epoch)
        self.epoch = epoch
        self._epoch_open = True
        self._run(lambda: trainer.start_epoch(epoch))

    def _pass_empty_epochs(self, first: int, stop: int) -> None:
        """start_epoch and end_epoch (with checkpoint) for epochs ``first .. stop - 1``, fed nothing."""
        trainer = self.trainer
        for skipped in range(first, stop):
            self._run(lambda e=skipped: trainer.start_epoch(e))
            self._end_epoch(skipped)

    def _end_epoch(self, epoch: int) -> None:
        """end_epoch, then with checkpoint_dir save_checkpoint and the epoch.NNN.done marker."""
        self._epoch_open = False
        trainer, directory, segments = self.trainer, self.config.checkpoint_dir, self.segments

        def end():
            trainer.end_epoch(epoch)
            if directory:
                from sprintiface._files import atomic_write

                os.makedirs(directory, exist_ok=True)
                trainer.save_checkpoint(directory, epoch)
                with atomic_write(done_marker(directory, epoch), "w") as file:
                    file.write(f'{{"epoch": {epoch}, "segments_fed": {segments}}}\n')

        self._run(end)

    # -- the calls ---------------------------------------------------------------

    def train(self, segment: Segment) -> None:
        """Hand a segment with its targets to the trainer (action train), count it otherwise."""
        if self.action == "forward":
            raise ProtocolError(f"segment {segment.name!r}: action forward takes feedInputForwarding/feedInput, "
                                f"not training targets (target mode {self.target_mode})")
        self.segments += 1
        self.frames += segment.num_frames
        if self.trainer is None:
            return
        self._enter_epoch(segment.epoch)
        trainer = self.trainer
        self._run(lambda: trainer.train_segment(segment))

    def forward(self, segment: Segment) -> numpy.ndarray:
        """Posteriors (outputDim, T') float32, Fortran order, for RASR."""
        self.segments += 1
        self.frames += segment.num_frames
        if self.action == "nop":
            posteriors = numpy.full((segment.num_frames, self.output_dim), 1.0 / self.output_dim, numpy.float32)
        elif self.action == "forward":
            from sprintiface.scores import model_posteriors

            posteriors = model_posteriors(self.engine, segment.features)
        else:
            self._enter_epoch(segment.epoch)
            if self._queue is not None:  # forward-only with a queued trainer: its updates first
                self._queue.join()
                self._check_failure()
            try:
                posteriors = self.trainer.forward(segment)
            except TrainerError:
                raise
            except Exception as error:
                raise TrainerError(f"trainer {type(self.trainer).__name__} failed in forward: {error}") from error
            if not isinstance(posteriors, numpy.ndarray) or posteriors.ndim != 2:
                raise TrainerError(f"trainer {type(self.trainer).__name__}: forward() must return an array "
                                   f"(T, outputDim={self.output_dim}); got "
                                   f"{getattr(posteriors, 'shape', type(posteriors).__name__)}")
            posteriors = numpy.ascontiguousarray(posteriors, dtype=numpy.float32)
        frames = posteriors.shape[0]
        if posteriors.shape[1] != self.output_dim or frames > segment.num_frames or \
                (frames < segment.num_frames and not self.allow_downsampling):
            raise FeatureError(
                f"segment {segment.name!r}: posteriors of shape {posteriors.shape} (T, C) for {segment.num_frames} "
                f"frames and outputDim {self.output_dim}; fewer frames only with allowDownsampling")
        return posteriors.T

    def forward_for_criterion(self, segment: Segment) -> numpy.ndarray:
        """feedInput in criterion-by-sprint: forward and keep the segment for finishError."""
        if self._pending is not None:
            raise ProtocolError(f"feedInput for segment {segment.name!r} while segment {self._pending.name!r} "
                                f"still waits for finishError() or finishDiscard()")
        posteriors = self.forward(segment)
        self._pending = segment
        self._pending_frames = posteriors.shape[1]
        return posteriors

    def finish_error(self, error, error_signal, natural_pairing_type) -> None:
        """RASR's loss and error signal (outputDim, T') for the segment of the last feedInput."""
        self._check_failure()
        pending = self._pending
        if pending is None:
            raise ProtocolError("finishError() without a segment from feedInput() waiting for it")
        expected = (self.output_dim, self._pending_frames)
        if not isinstance(error_signal, numpy.ndarray) or error_signal.shape != expected:
            raise FeatureError(f"finishError for segment {pending.name!r}: expected errorSignal of shape {expected} "
                               f"(outputDim, T), got {getattr(error_signal, 'shape', type(error_signal).__name__)}")
        if natural_pairing_type is not None and not isinstance(natural_pairing_type, str):
            raise ProtocolError(f"finishError for segment {pending.name!r}: expected naturalPairingType to be a str "
                                f"(such as 'softmax') or None, got {type(natural_pairing_type).__name__}")
        try:
            loss = float(numpy.sum(error))
        except (TypeError, ValueError):
            raise FeatureError(f"finishError for segment {pending.name!r}: expected error to be a number, "
                               f"got {type(error).__name__}") from None
        self._pending = None
        if self.trainer is not None:
            signal = numpy.ascontiguousarray(error_signal.T, dtype=numpy.float32)
            trainer = self.trainer
            self._run(lambda: trainer.backward(pending, loss, signal, natural_pairing_type))

    def finish_discard(self) -> None:
        """RASR drops the segment of the last feedInput."""
        self._check_failure()
        pending = self._pending
        if pending is None:
            raise ProtocolError("finishDiscard() without a segment from feedInput() waiting for it")
        self._pending = None
        if self.trainer is not None:
            trainer = self.trainer
            self._run(lambda: trainer.discard(pending))

    # -- the end ----------------------------------------------------------------

    def close(self, complete: bool = True) -> None:
        """Finish the trainer, drain and join its thread; raise its failure.

        ``complete`` (RASR's exit()): the open epoch ends properly (end_epoch,
        checkpoint, marker) when the schedule handed all of it out, or when
        there is no schedule. After a failure the trainer gets ``abort()``
        instead of ``finish()``.
        """
        if self._closed:
            return
        try:
            if self.trainer is not None and self._failure is None:
                if complete and self._epoch_open and \
                        (self.schedule is None or self.schedule.handed_out(self.epoch)):
                    self._end_epoch(self.epoch)
                    if self.schedule is not None:  # later epochs handed out with nothing for this process
                        last = self.epoch
                        while last < self.schedule.last and self.schedule.handed_out(last + 1):
                            last += 1
                        self._pass_empty_epochs(self.epoch + 1, last + 1)
                self._run(self.trainer.finish)
        except TrainerError:
            pass  # raised below, after the thread is joined
        finally:
            self._closed = True
            if self._worker is not None:
                self._queue.put(None)
                self._worker.join()
            atexit.unregister(self._close_at_exit)
            if self._failure is not None and self.trainer is not None:
                try:
                    self.trainer.abort()
                except Exception:
                    logger.exception("trainer %s failed in abort()", type(self.trainer).__name__)
        self._check_failure()
        logger.info("trainer session closed: %d segments, %d frames", self.segments, self.frames)

    def _close_at_exit(self) -> None:
        try:
            self.close(complete=False)
        except Exception:
            logger.exception("the trainer failed while finishing at exit")
