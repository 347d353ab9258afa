"""RASR's PythonTrainer: one training session per process, driven by module-level calls.

RASR calls ``init(inputDim=, outputDim=, allowDownsampling=, config=, targetMode=,
cudaEnabled=, cudaActiveGpu=)`` lazily with the first segment, then one
``feedInput*`` per segment (features float32 (inputDim, T), Fortran order),
then ``exit()``. The module-level names in :mod:`sprintiface` delegate to the
:class:`TrainingSession` made here.

Actions (``action`` in pymod-config, required as in RETURNN):

- ``forward``: feedInputForwarding / feedInput return the model's posteriors,
  float32 (outputDim, T) in Fortran order (a transposed view of ONNX
  Runtime's (T, C) output: RASR takes it without a copy);
- ``train``: segments go to the trainer (:mod:`sprintiface.trainers`), on a
  background thread behind a bounded queue when ``queue_size > 0`` (not for
  criterion-by-sprint, which needs the posteriors at once). A failure there is
  raised as TrainerError at RASR's next call;
- ``nop``: every call is accepted and counted; feedInput returns uniform posteriors.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import traceback
from typing import Callable, Optional

import numpy

from sprintiface.config import Config, load_config, resolve_model_path
from sprintiface.errors import ConfigError, FeatureError, ProtocolError, TrainerError
from sprintiface.trainers import Segment, Trainer, make_trainer

logger = logging.getLogger("sprintiface")

TARGET_MODES = ("criterion-by-sprint", "target-generic", "target-alignment", "target-segment-orth",
                "unsupervised", "forward-only")

#: Epoch of the segment getSegmentList yielded last (RASR processes it right after the yield).
_announced_epoch = 1
#: The session of this process (RASR runs one trainer per process).
session: Optional["TrainingSession"] = None
_target_mode_override: Optional[str] = None
#: The config getSegmentList or init saw last (for get_final_epoch).
last_config: Optional[Config] = None


def announce_epoch(epoch: int) -> None:
    """Called by the segment-list generator before it yields a segment of ``epoch``."""
    global _announced_epoch
    _announced_epoch = epoch


def set_target_mode(mode: str) -> None:
    """Override RASR's targetMode for the session (RETURNN's set_target_mode)."""
    global _target_mode_override
    if mode not in TARGET_MODES:
        raise ConfigError(f"target mode: expected one of {', '.join(TARGET_MODES)}, got {mode!r}")
    _target_mode_override = mode
    if session is not None:
        session.target_mode = mode


def init_python_trainer(inputDim, outputDim, config, targetMode, allowDownsampling=False, **kwargs):  # noqa: N803
    """Start this process's training session (RASR's init with ``name`` None). Returns None."""
    global session
    if session is not None:
        session.close()
    session = TrainingSession(inputDim, outputDim, config, _target_mode_override or targetMode,
                              allow_downsampling=bool(allowDownsampling))
    return None


def get_final_epoch() -> int:
    """The last epoch (``num_epochs``) of the trainer's or the segment ordering's config."""
    if last_config is None:
        raise ProtocolError("get_final_epoch() before init() or getSegmentList(): no config yet")
    return last_config.num_epochs


def dump_flags() -> dict:
    """Log and return the environment flags that decide threading and placement."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
             "PYTHONPATH")
    flags = {name: os.environ.get(name) for name in names}
    for name, value in flags.items():
        logger.info("%s = %r", name, value)
    return flags


def require_session() -> "TrainingSession":
    if session is None:
        raise ProtocolError("a PythonTrainer call came before init(inputDim=..., outputDim=..., ...)")
    return session


def exit_training() -> None:
    """RASR's exit(): drain and finish. Safe to call when no session was started."""
    global session
    if session is not None:
        current, session = session, None
        current.close()


def _integer(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value <= 0:
        raise ProtocolError(f"init: expected {name} to be an integer > 0, got {value!r}")
    return int(value)


class TrainingSession:
    """State of one RASR PythonTrainer run (see the module docstring)."""

    def __init__(self, input_dim, output_dim, config, target_mode: str, allow_downsampling: bool = False):
        self.input_dim = _integer(input_dim, "inputDim")
        self.output_dim = _integer(output_dim, "outputDim")
        if target_mode not in TARGET_MODES:
            raise ConfigError(f"targetMode: expected one of {', '.join(TARGET_MODES)}, got {target_mode!r}")
        self.config: Config = config if isinstance(config, Config) else load_config(config)
        global last_config
        last_config = self.config
        self.target_mode = target_mode
        self.allow_downsampling = allow_downsampling
        self.action = self.config.action
        if self.action is None:
            raise ConfigError("config key 'action' is required for the trainer: forward, train or nop")
        if self.action == "forward" and target_mode not in ("criterion-by-sprint", "forward-only"):
            raise ConfigError(f"action forward needs target-mode criterion-by-sprint or forward-only, got {target_mode!r}")
        self.engine = None
        if self.config.onnx or self.config.model:
            from sprintiface.engine import OnnxEngine

            self.engine = OnnxEngine.load(
                resolve_model_path(self.config), intra_op_threads=self.config.intra_op_threads,
                inter_op_threads=self.config.inter_op_threads, input_name=self.config.input_name,
                output_name=self.config.output_name, length_name=self.config.length_name,
                output_kind=self.config.output_kind)
            self.engine.check_dims(self.input_dim, self.output_dim)
        elif self.action == "forward":
            raise ConfigError("action forward needs a model: onnx:<path>, or model:<prefix> with epoch:<n>")
        self.trainer: Optional[Trainer] = None
        if self.action == "train":
            self.trainer = make_trainer(self.config, self.input_dim, self.output_dim, target_mode, self.engine)
        self.segments = 0
        self.frames = 0
        self.epoch: Optional[int] = None
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
        else:
            try:
                task()
            except TrainerError:
                raise
            except Exception as error:
                raise TrainerError(f"trainer {type(self.trainer).__name__} failed: {error}") from error

    def _check_failure(self) -> None:
        if self._failure is not None:
            error = self._failure
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            raise TrainerError(f"the trainer's background thread failed:\n{text}") from error

    # -- segments ---------------------------------------------------------------

    def segment(self, features, weights, segment_name, **targets) -> Segment:
        """Check RASR's arrays and wrap them (no copy) as a time-major Segment."""
        self._check_failure()
        if not isinstance(features, numpy.ndarray) or features.ndim != 2 or features.shape[0] != self.input_dim:
            shape = getattr(features, "shape", type(features).__name__)
            raise FeatureError(f"segment {segment_name!r}: expected features of shape (inputDim={self.input_dim}, T), "
                               f"got {shape}")
        if features.dtype != numpy.float32:
            raise FeatureError(f"segment {segment_name!r}: expected float32 features, got {features.dtype}")
        num_frames = features.shape[1]
        if weights is not None:
            weights = numpy.asarray(weights)
            if weights.shape != (num_frames,):
                raise FeatureError(f"segment {segment_name!r}: expected weights of shape ({num_frames},), "
                                   f"got {weights.shape}")
        alignment = targets.get("alignment")
        if alignment is not None:
            alignment = numpy.asarray(alignment)
            if alignment.ndim != 1 or alignment.shape[0] != num_frames:
                raise FeatureError(f"segment {segment_name!r}: expected an alignment of {num_frames} frames, "
                                   f"got shape {alignment.shape}")
            if alignment.size and int(alignment.max()) >= self.output_dim:
                frame = int(numpy.argmax(alignment >= self.output_dim))
                raise FeatureError(f"segment {segment_name!r}: alignment class {int(alignment[frame])} at frame "
                                   f"{frame} is outside [0, outputDim={self.output_dim})")
        return Segment(segment_name, features.T, _announced_epoch, alignment, targets.get("orthography"),
                       weights, targets.get("speaker_name"), targets.get("speaker_gender"))

    def _enter_epoch(self, epoch: int) -> None:
        if self.epoch == epoch or self.trainer is None:
            self.epoch = epoch
            return
        trainer, directory = self.trainer, self.config.checkpoint_dir
        if self.epoch is not None:
            self._end_epoch(self.epoch)
        elif directory and epoch > 1 and os.path.isfile(os.path.join(directory, f"epoch.{epoch - 1:03d}.done")):
            self._run(lambda: trainer.load_checkpoint(directory, epoch - 1))
        self.epoch = epoch
        self._run(lambda: trainer.start_epoch(epoch))

    def _end_epoch(self, epoch: int) -> None:
        trainer, directory, segments = self.trainer, self.config.checkpoint_dir, self.segments

        def end():
            trainer.end_epoch(epoch)
            if directory:
                from sprintiface._files import atomic_write

                os.makedirs(directory, exist_ok=True)
                trainer.save_checkpoint(directory, epoch)
                with atomic_write(os.path.join(directory, f"epoch.{epoch:03d}.done"), "w") as file:
                    file.write(f'{{"epoch": {epoch}, "segments_fed": {segments}}}\n')

        self._run(end)

    def train(self, segment: Segment) -> None:
        """Hand a segment with its targets to the trainer (action train), count it otherwise."""
        self.segments += 1
        self.frames += segment.num_frames
        if self.action == "forward":
            raise ProtocolError(f"segment {segment.name!r}: action forward takes feedInputForwarding/feedInput, "
                                f"not training targets (target mode {self.target_mode})")
        if self.trainer is None:
            return
        self._enter_epoch(segment.epoch)
        trainer = self.trainer
        queued = segment.detached() if self._queue is not None else segment
        self._run(lambda: trainer.train_segment(queued))

    def forward(self, segment: Segment) -> numpy.ndarray:
        """Posteriors (outputDim, T') float32, Fortran order, for RASR."""
        self.segments += 1
        self.frames += segment.num_frames
        if self.action == "nop":
            posteriors = numpy.full((segment.num_frames, self.output_dim), 1.0 / self.output_dim, numpy.float32)
        elif self.action == "forward":
            posteriors = self.engine.posteriors(numpy.ascontiguousarray(segment.features))
        else:
            self._enter_epoch(segment.epoch)
            try:
                posteriors = self.trainer.forward(segment)
            except TrainerError:
                raise
            except Exception as error:
                raise TrainerError(f"trainer {type(self.trainer).__name__} failed in forward: {error}") from error
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
        if self.trainer is not None:
            self._pending = segment.detached()
        else:
            self._pending = segment
        self._pending_frames = posteriors.shape[1]
        return posteriors

    def finish_error(self, error, error_signal, natural_pairing_type) -> None:
        self._check_failure()
        pending = self._pending
        if pending is None:
            raise ProtocolError("finishError() without a segment from feedInput() waiting for it")
        expected = (self.output_dim, self._pending_frames)
        if not isinstance(error_signal, numpy.ndarray) or error_signal.shape != expected:
            raise FeatureError(f"finishError for segment {pending.name!r}: expected errorSignal of shape {expected} "
                               f"(outputDim, T), got {getattr(error_signal, 'shape', type(error_signal).__name__)}")
        self._pending = None
        if self.trainer is not None:
            signal = numpy.ascontiguousarray(error_signal.T, dtype=numpy.float32)
            trainer = self.trainer
            self._run(lambda: trainer.backward(pending, float(numpy.sum(error)), signal, natural_pairing_type))

    def finish_discard(self) -> None:
        self._check_failure()
        if self._pending is None:
            raise ProtocolError("finishDiscard() without a segment from feedInput() waiting for it")
        self._pending = None

    # -- the end ----------------------------------------------------------------

    def close(self) -> None:
        """End the epoch, finish the trainer, drain and join its thread; raise its failure."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.trainer is not None and self._failure is None:
                trainer = self.trainer
                if self.epoch is not None:
                    self._end_epoch(self.epoch)
                self._run(trainer.finish)
        finally:
            if self._worker is not None:
                self._queue.put(None)
                self._worker.join()
            atexit.unregister(self._close_at_exit)
        self._check_failure()
        logger.info("trainer session closed: %d segments, %d frames", self.segments, self.frames)

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception:
            logger.exception("sprintiface: the trainer failed while finishing at exit")
