"""The PythonFeatureScorer RASR talks to in recognition and alignment.

Per RASR buffer (a segment; see ``buffer_size`` for chunks)::

    add_feature(feature=..., time=0), add_feature(..., time=1), ...   # C copies
    compute(num_frames=T)       # one ONNX Runtime run over the (T, F) block, in place
    get_scores(time=t)          # row t of the (T, C) score matrix, no copy
    reset(num_frames=T)

Scores are in -log space (lower is better):
``score[t, c] = -log p(c | x) + prior_scale * log p(c)``.

The scorer holds a compiled :class:`sprintiface._buffer.FrameBuffer` (frames
in, score rows out) and, from ``init`` on, RASR's two per-frame calls are that
buffer's methods, bound on the scorer: they never enter a Python frame.
Everything here runs once per buffer or once per job, and holds the
protocol's rules: what a reset forgives, what compute needs, what is logged.
"""
from __future__ import annotations

import collections
import time as _time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional, Union

import numpy

from sprintiface._buffer import FrameBuffer
from sprintiface._checks import checked_int
from sprintiface.config import Config, load_config, require_file
from sprintiface.engine import Binding, OnnxEngine, return_freed_memory
from sprintiface.errors import ConfigError, FeatureError, ProtocolError, ScoreError
from sprintiface.log import SCORER_SEGMENT_LEVEL, configure_logging, logger
from sprintiface.priors import load_prior

if TYPE_CHECKING:
    import numpy.typing
    from sprintiface.dataset import InMemoryDataset


def init_python_feature_scorer(config: str, **kwargs: Any) -> PythonFeatureScorer:
    """Make the scorer from RASR's pymod-config string (``config``) and init()'s other arguments."""
    parsed = load_config(config)
    if parsed.action not in (None, "forward"):
        raise ConfigError(
            f"config key 'action': the feature scorer needs action forward (or none), got {parsed.action!r}")
    return PythonFeatureScorer(config=parsed, **kwargs)


#: Memory policy: the frame block and the score matrix are given back when they hold more
#: than SHRINK_FACTOR x the longest of the last RECENT_SEGMENTS segments (and more than
#: MIN_FRAMES); they are then cut to that length (and ONNX Runtime's arena is trimmed at
#: the next run), so one outlier pins its memory for at most RECENT_SEGMENTS segments.
RECENT_SEGMENTS = 16
SHRINK_FACTOR = 4
MIN_FRAMES = 1024


def _count(value: object, call: str, name: str = "num_frames") -> int:
    """``value`` as a frame count or dimension; ProtocolError naming ``call`` and ``name`` otherwise."""
    return checked_int(value, name, where=call)


class _Serving(NamedTuple):
    """What init() sets up, held as one attribute: a call reads all three at once, so an
    init() from another thread can never pair one buffer with another's engine."""

    engine: OnnxEngine
    binding: Binding
    buffer: FrameBuffer


class PythonFeatureScorer:
    """RASR's PythonFeatureScorer on an ONNX model.

    ``callback``, ``version_number``, ``reference`` are what RASR passes to the
    module's init(); ``config`` is a parsed :class:`~sprintiface.config.Config`
    (or a pymod-config string); ``sprint_opts`` (RETURNN's name) is accepted as
    a dict of string options instead.
    """

    def __init__(self, callback: Optional[Callable[..., Any]] = None, version_number: Optional[int] = None,
                 sprint_opts: Optional[Mapping[str, Any]] = None, config: Union[Config, str, None] = None,
                 **kwargs: Any):
        if config is None:
            config = ",".join(f"{key}:{value}" for key, value in (sprint_opts or {}).items())
        if isinstance(config, str):
            config = load_config(config)
        self._config: Config = config
        self.callback = callback
        self.version_number = version_number
        self.sprint_opts = dict(config.raw)
        self.input_dim: Optional[int] = None
        self.output_dim: Optional[int] = None
        #: prior_scale * log p(c), float32 (output_dim,), or None without a prior.
        self.prior_term: Optional[numpy.ndarray] = None
        self.segment_count = 0
        self._serving: Optional[_Serving] = None
        # A compute() of ours that raised, and the buffer's count of refused per-frame
        # calls at the last reset: after either, reset() forgives a count that disagrees.
        self._failed = False
        self._rejected_seen = 0
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_SEGMENTS)
        # For the summary at exit(): frames scored and seconds spent in compute().
        self._frames_scored = 0
        self._compute_seconds = 0.0
        configure_logging(config)

    # -- once per job ---------------------------------------------------------

    def init(self, input_dim: int, output_dim: int) -> None:
        """Called by RASR: ``input_dim`` features per frame, ``output_dim`` emission classes.

        Loads the model (warm-up included), checks both dims against it and
        loads the prior.
        """
        input_dim, output_dim = _count(input_dim, "init", "input_dim"), _count(output_dim, "init", "output_dim")
        for name, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if value <= 0:
                raise ProtocolError(f"init: expected {name} to be an integer > 0, got {value!r}")
        config = self._config
        engine = OnnxEngine.from_config(config)
        engine.check_dims(input_dim, output_dim)
        engine.check_frame_synchronous()
        self.prior_term = self._load_prior_term(output_dim)
        self.input_dim, self.output_dim = input_dim, output_dim
        buffer = FrameBuffer(input_dim, output_dim, config.buffer_size,
                             None if config.score_kernel == "auto" else config.score_kernel)
        self._serving = _Serving(engine, engine.new_binding(), buffer)
        self._failed, self._rejected_seen = False, 0
        self._recent.clear()
        # RASR's per-frame calls go straight to the compiled buffer: instance attributes that
        # hide the methods below (which only refuse calls before init).
        self.add_feature = buffer.add_feature  # type: ignore[method-assign]
        self.get_scores = buffer.get_scores  # type: ignore[method-assign]
        if config.buffer_size > 0:
            logger.warning(
                "buffer_size %d: get_feature_buffer_size() reports %d frames, but every RASR program that uses a "
                "feature scorer (speech-recognizer, Flf's recognizer, the aligner; RASR master) fills the buffer "
                "and then adds one more frame: RASR aborts at frame %d with 'precondition !bufferFilled() "
                "violated' unless the segment has at most %d frames. Use buffer_size:-1 (whole segments, the "
                "default) with today's RASR; see docs/recognition.md", config.buffer_size, config.buffer_size,
                config.buffer_size + 1, config.buffer_size)
        logger.info("scorer ready: model %s, %d -> %d (%s), prior %s, buffer_size %d, threads %d/%d, "
                    "score kernel %s", engine.path, input_dim, output_dim, engine.interface.output_kind,
                    f"{config.prior_file} x {config.prior_scale:g}" if self.prior_term is not None else "none",
                    config.buffer_size, config.intra_op_threads, config.inter_op_threads, buffer.kernel)

    def _load_prior_term(self, output_dim: int) -> Optional[numpy.ndarray]:
        """prior_scale * log p(c), float32 (output_dim,), or None without a prior."""
        config = self._config
        if config.prior_file is None:
            if "prior_scale" in config.given and config.prior_scale != 0:
                raise ConfigError(
                    f"config key 'prior_scale' is {config.prior_scale:g}, but no prior_file is given")
            return None
        path = require_file(config, "prior_file")
        log_prior = load_prior(path, space=config.prior_space, num_classes=output_dim)
        if config.prior_scale == 0:
            return None
        return numpy.ascontiguousarray(log_prior * numpy.float32(config.prior_scale), dtype=numpy.float32)

    def exit(self) -> None:
        """Called by RASR when it shuts the scorer down: logs the job's summary.

        RASR calls exit() right after the last segment's get_scores, with no reset
        for it: a buffer still held is that last segment and is counted.
        """
        serving = self._serving
        if serving is not None and serving.buffer.count:
            self.segment_count += 1
            serving.buffer.clear()
        if self._frames_scored:
            # RASR's frames are 10 ms apart: the real-time factor RASR's ONNX scorer reports.
            logger.info("scorer done: %d segments, %d frames, compute %.3f s, RTF %.4f", self.segment_count,
                        self._frames_scored, self._compute_seconds,
                        self._compute_seconds / (self._frames_scored * 0.01))

    def get_feature_buffer_size(self) -> int:
        """Called by RASR: frames per buffer; -1 is no limit (whole segments)."""
        return self._config.buffer_size

    # -- per frame: the compiled buffer's methods, bound by init() ---------------

    def add_feature(self, feature: numpy.typing.ArrayLike, time: int) -> None:
        """Called by RASR per frame: copy ``feature`` (float32 (input_dim,)) into the
        buffer at ``time`` (frames so far). Served by the compiled buffer after init()."""
        raise ProtocolError("add_feature() before init(input_dim, output_dim)")

    def get_scores(self, time: int) -> numpy.typing.NDArray[numpy.float32]:
        """Called by RASR: the -log scores of frame ``time``, a float32 (output_dim,) view
        (no copy), valid until the next compute() or reset(). Served by the compiled
        buffer after init()."""
        raise ProtocolError("get_scores() before init(input_dim, output_dim)")

    # -- once per buffer --------------------------------------------------------

    def compute(self, num_frames: int) -> None:
        """Called by RASR: score all ``num_frames`` frames received so far.

        One ONNX Runtime run reads the frame block in place and writes into the
        score matrix; the -log transform and the prior are applied there in place.
        """
        engine, binding, buffer = self._require_serving("compute")
        try:
            num_frames = _count(num_frames, "compute")
            # checks num_frames against the buffer under the buffer's own guard
            frames_address, scores_address = buffer.open_window(num_frames)
        except ProtocolError:
            self._failed = True
            raise
        started = _time.perf_counter()
        try:
            bad_value = buffer.find_non_finite()
            if bad_value is not None:
                frame, index = bad_value
                raise FeatureError(f"compute: the feature of frame {frame} (time {frame}) holds "
                                   f"{buffer.frames()[frame, index]} at index {index}; expected finite values")
            engine.run_into(binding, frames_address, num_frames, scores_address)
        except BaseException:
            buffer.abandon_window()
            self._failed = True
            raise
        bad = buffer.finish_window(engine.kind, engine.logit_bias, self.prior_term)
        if bad >= 0:
            self._failed = True
            raise ScoreError(
                f"the model gave non-finite scores for segment {self.get_segment_name()!r} at frame {bad} "
                f"(of {num_frames}; output kind {engine.kind})")
        elapsed = _time.perf_counter() - started
        self._frames_scored += num_frames
        self._compute_seconds += elapsed
        # A line per buffer costs more than a small buffer's whole run: at the level log.py
        # names (debug; the summary comes at exit()), formatted only when it is shown.
        if logger.isEnabledFor(SCORER_SEGMENT_LEVEL):
            logger.log(SCORER_SEGMENT_LEVEL, "%s: %d frames, compute %.2f ms, RTF %.4f", self.get_segment_name(),
                       num_frames, elapsed * 1e3, elapsed / (num_frames * 0.01))

    def _give_back_memory(self, serving: _Serving, frames: int) -> None:
        """The memory policy: after a long outlier, storage follows the recent segments again."""
        self._recent.append(frames)
        longest = max(max(self._recent), MIN_FRAMES)
        buffer = serving.buffer
        if max(buffer.score_capacity, buffer.frame_capacity) > SHRINK_FACTOR * longest:
            buffer.shrink(longest)
            serving.binding.trim_arena = True  # ONNX Runtime's buffers for the outlier go at the next run
            return_freed_memory()

    def _require_serving(self, call: str) -> _Serving:
        serving = self._serving
        if serving is None:
            raise ProtocolError(f"{call}() before init(input_dim, output_dim)")
        return serving

    def reset(self, num_frames: int) -> None:
        """Called by RASR: drop the buffer of ``num_frames`` frames (0 allowed).

        The buffer is cleared even when the count disagrees (then a
        ProtocolError follows), so the next segment is served normally; after a
        refused add_feature/get_scores or a compute() that raised, a disagreeing
        count is forgiven.
        """
        num_frames = _count(num_frames, "reset")
        serving = self._serving
        if serving is None:
            if num_frames != 0:
                raise ProtocolError(f"reset(num_frames={num_frames}) before init(input_dim, output_dim)")
            return
        buffer = serving.buffer
        held = buffer.count
        forgiven = self._failed or buffer.rejected != self._rejected_seen
        buffer.clear()
        self._failed, self._rejected_seen = False, buffer.rejected
        if held:
            self.segment_count += 1
            self._give_back_memory(serving, held)
        if num_frames != held and not forgiven:
            raise ProtocolError(f"reset(num_frames={num_frames}): the buffer held {held} frames")

    # -- RETURNN's PythonFeatureScorer API beyond what RASR calls --------------

    def get_segment_name(self) -> str:
        """Name of the current buffer; RASR does not pass segment names to a feature scorer."""
        return f"unknown-seq-name-{self.segment_count}"

    def get_features(self, num_frames: Optional[int] = None) -> numpy.typing.NDArray[numpy.float32]:
        """The buffered features, float32 (input_dim, num_frames): a view, no copy."""
        buffer = self._require_serving("get_features").buffer
        if num_frames is not None and _count(num_frames, "get_features") != buffer.count:
            raise ProtocolError(f"get_features(num_frames={num_frames}): the buffer holds {buffer.count} frames")
        frames: numpy.typing.NDArray[numpy.float32] = buffer.frames().T
        return frames

    def get_posteriors(self, num_frames: Optional[int] = None) -> numpy.typing.NDArray[numpy.float32]:
        """Posteriors p(c|x) of the buffered frames, float32 (output_dim, num_frames) (+prob space,
        no prior), by the same -log transform the scores come from (exp(-score))."""
        from sprintiface.scores import model_posteriors

        serving = self._require_serving("get_posteriors")
        features = self.get_features(num_frames)
        posteriors: numpy.typing.NDArray[numpy.float32] = model_posteriors(
            serving.engine, numpy.ascontiguousarray(features.T), self._config.score_kernel).T
        return posteriors

    def features_to_dataset(self, num_frames: Optional[int] = None) -> tuple[InMemoryDataset, int]:
        """``(dataset, seq_idx)``: the buffered features as a one-segment in-memory dataset."""
        from sprintiface.dataset import features_to_dataset

        return features_to_dataset(self.get_features(num_frames), self.get_segment_name())

    @property
    def engine(self) -> Optional[OnnxEngine]:
        """The ONNX engine (None before init)."""
        return self._serving.engine if self._serving is not None else None

    @property
    def config(self) -> Config:
        """The parsed configuration."""
        return self._config
