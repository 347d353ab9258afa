"""The PythonFeatureScorer RASR talks to in recognition and alignment.

Per RASR buffer (a segment, or a chunk of at most ``buffer_size`` frames)::

    add_feature(feature=..., time=0), add_feature(..., time=1), ...   # C copies
    compute(num_frames=T)       # one ONNX Runtime run over the (T, F) block, in place
    get_scores(time=t)          # row t of the (T, C) score matrix, no copy
    reset(num_frames=T)

Scores are in -log space (lower is better):
``score[t, c] = -log p(c | x) + prior_scale * log p(c)``.
``add_feature`` and ``get_scores`` are implemented in C/Cython by the base
class (sprintiface._buffers.ScorerBuffers); everything here runs once per
buffer or once per job.
"""
from __future__ import annotations

import logging
import time as _time
from typing import Callable, Optional

import numpy

from sprintiface._buffers import ScorerBuffers
from sprintiface.config import Config, load_config, require_file, resolve_model_path
from sprintiface.engine import OnnxEngine
from sprintiface.errors import ConfigError, ModelError, ProtocolError, ScoreError
from sprintiface.priors import load_prior

logger = logging.getLogger("sprintiface")


def configure_logging(config: Config) -> None:
    """Apply ``log_level``; add a stderr handler when the host (RASR) set none up."""
    logger.setLevel(config.log_level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("sprintiface: %(message)s"))
        logger.addHandler(handler)


def init_python_feature_scorer(config: str, **kwargs) -> "PythonFeatureScorer":
    """Make the scorer from RASR's pymod-config string (``config``) and init()'s other arguments."""
    parsed = load_config(config)
    if parsed.action not in (None, "forward"):
        raise ConfigError(
            f"config key 'action': the feature scorer needs action forward (or none), got {parsed.action!r}")
    return PythonFeatureScorer(config=parsed, **kwargs)


class PythonFeatureScorer(ScorerBuffers):
    """RASR's PythonFeatureScorer on an ONNX model.

    ``callback``, ``version_number``, ``reference`` are what RASR passes to the
    module's init(); ``config`` is a parsed :class:`~sprintiface.config.Config`
    (or a pymod-config string); ``sprint_opts`` (RETURNN's name) is accepted as
    a dict of string options instead.
    """

    def __init__(self, callback: Optional[Callable] = None, version_number: Optional[int] = None,
                 sprint_opts: Optional[dict] = None, config=None, **kwargs):
        if config is None:
            config = ",".join(f"{key}:{value}" for key, value in (sprint_opts or {}).items())
        if isinstance(config, str):
            config = load_config(config)
        self._config = config
        self.callback = callback
        self.version_number = version_number
        self.sprint_opts = dict(config.raw)
        self.input_dim: Optional[int] = None
        self.output_dim: Optional[int] = None
        self.prior_term: Optional[numpy.ndarray] = None
        self._class_term: Optional[numpy.ndarray] = None
        self.segment_count = 0
        self._engine: Optional[OnnxEngine] = None
        self._binding = None
        configure_logging(config)

    # -- once per job ---------------------------------------------------------

    def init(self, input_dim: int, output_dim: int) -> None:
        """Called by RASR: ``input_dim`` features per frame, ``output_dim`` emission classes.

        Loads the model (warm-up included), checks both dims against it and
        loads the prior.
        """
        for name, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ProtocolError(f"init: expected {name} to be an integer > 0, got {value!r}")
        config = self._config
        engine = OnnxEngine.load(
            resolve_model_path(config), intra_op_threads=config.intra_op_threads,
            inter_op_threads=config.inter_op_threads, input_name=config.input_name,
            output_name=config.output_name, length_name=config.length_name, output_kind=config.output_kind)
        engine.check_dims(input_dim, output_dim)
        self.prior_term = self._load_prior_term(output_dim)
        # -bias: the cut bias Add is undone in the affine pass (csrc/sprintiface.h)
        self._class_term = self.prior_term
        if engine.logit_bias is not None:
            term = -engine.logit_bias if self.prior_term is None else self.prior_term - engine.logit_bias
            self._class_term = numpy.ascontiguousarray(term, dtype=numpy.float32)
        self.input_dim, self.output_dim = input_dim, output_dim
        self._engine = engine
        self._binding = engine.new_binding()
        self._init_buffers(input_dim, output_dim, config.buffer_size)
        logger.info("scorer ready: model %s, %d -> %d (%s), prior %s, buffer_size %d, threads %d/%d",
                    engine.path, input_dim, output_dim, engine.interface.output_kind,
                    f"{config.prior_file} x {config.prior_scale:g}" if self.prior_term is not None else "none",
                    config.buffer_size, config.intra_op_threads, config.inter_op_threads)

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
        """Called by RASR when it shuts the scorer down."""
        logger.debug("scorer exit after %d segments", self.segment_count)
        self.clear_buffers()

    def get_feature_buffer_size(self) -> int:
        """Called by RASR: frames per buffer; -1 is no limit (whole segments)."""
        return self._config.buffer_size

    # -- once per buffer --------------------------------------------------------

    def compute(self, num_frames: int) -> None:
        """Called by RASR: score all ``num_frames`` frames received so far.

        One ONNX Runtime run reads the frame block in place and writes into the
        score matrix; the -log transform and the prior are applied there in place.
        """
        frames = self._require_frames(num_frames, "compute")
        started = _time.perf_counter()
        self.score_window(num_frames)
        try:
            self._engine.run_into(self._binding, frames.address, num_frames, self.scores_address)
        except ModelError:
            self.failed = True
            raise
        bad = self.finish_scores(num_frames, self._engine.kind, self._engine.logit_bias, self._class_term)
        if bad >= 0:
            self.failed = True
            raise ScoreError(
                f"the model gave non-finite scores for segment {self.get_segment_name()!r} at frame {bad} "
                f"(of {num_frames}; output kind {self._engine.kind})")
        if logger.isEnabledFor(logging.INFO):
            elapsed = _time.perf_counter() - started
            # RASR's frames are 10 ms apart: the real-time factor RASR's ONNX scorer reports.
            logger.info("%s: %d frames, compute %.1f ms, RTF %.4f", self.get_segment_name(),
                        num_frames, elapsed * 1e3, elapsed / (num_frames * 0.01))

    def _require_frames(self, num_frames, caller: str):
        frames = self.frames
        if frames is None:
            raise ProtocolError(f"{caller}() before init(input_dim, output_dim)")
        if num_frames != frames.count or num_frames <= 0:
            self.failed = True
            raise ProtocolError(
                f"{caller}(num_frames={num_frames}): the buffer holds {frames.count} frames; "
                f"expected num_frames == {frames.count} > 0")
        return frames

    def reset(self, num_frames: int) -> None:
        """Called by RASR: drop the buffer of ``num_frames`` frames (0 allowed).

        The buffer is cleared even when the count disagrees (then a
        ProtocolError follows), so the next segment is served normally.
        """
        held = self.frames.count if self.frames is not None else 0
        failed = self.failed
        if held:
            self.segment_count += 1
        self.clear_buffers()
        if num_frames != held and not failed:
            raise ProtocolError(f"reset(num_frames={num_frames}): the buffer held {held} frames")

    # -- RETURNN's PythonFeatureScorer API beyond what RASR calls --------------

    def get_segment_name(self) -> str:
        """Name of the current buffer; RASR does not pass segment names to a feature scorer."""
        return f"unknown-seq-name-{self.segment_count}"

    def get_features(self, num_frames: Optional[int] = None) -> numpy.ndarray:
        """The buffered features, float32 (input_dim, num_frames): a view, no copy."""
        frames = self._require_frames(num_frames if num_frames is not None else len(self.frames or ()),
                                      "get_features")
        return frames.window().T

    def get_posteriors(self, num_frames: Optional[int] = None) -> numpy.ndarray:
        """Posteriors p(c|x) of the buffered frames, float32 (output_dim, num_frames) (+prob space,
        no prior). For an output_kind of scores this is exp(-scores)."""
        features = self.get_features(num_frames)
        return self._engine.posteriors(numpy.ascontiguousarray(features.T)).T

    def features_to_dataset(self, num_frames: Optional[int] = None):
        """``(dataset, seq_idx)``: the buffered features as a one-segment in-memory dataset."""
        from sprintiface.dataset import features_to_dataset

        return features_to_dataset(self.get_features(num_frames), self.get_segment_name())

    @property
    def engine(self) -> Optional[OnnxEngine]:
        """The ONNX engine (None before init)."""
        return self._engine

    @property
    def config(self) -> Config:
        """The parsed configuration."""
        return self._config
