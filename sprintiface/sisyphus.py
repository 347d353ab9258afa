"""i6_core feature scorer that writes sprintiface's RASR block (see docs/sisyphus.md).

``from sprintiface.sisyphus import SprintifaceFeatureScorer`` needs Sisyphus and
i6_core on the path of the Sisyphus manager (neither is a dependency of
sprintiface, and RASR's Python never imports this module). Importing
``sprintiface.sisyphus`` itself always works: the class is built from
i6_core's ``FeatureScorer`` at the first access of the name, and without
i6_core that access raises :class:`MissingDependencyError`.

What the class guards against, all of it found with i6_core's jobs:

- ``pymod_path`` is written so that its *value* never changes a job's hash,
  in every job: recognition jobs pass it through their unhashed post_config,
  but ``AlignmentJob`` applies the scorer to one config as both config and
  post_config, which hashes everything. As the value is not hashed, two jobs
  that differ only in it are one Sisyphus job (Sisyphus returns the first
  object for the second, whose path RASR then never sees), so every scorer of
  one Sisyphus process must name the same ``pymod_path``: a second, different
  one is a ConfigError at construction.
- ``extra_config`` keys are checked against sprintiface's own keys at graph
  construction, not at RASR's init hours later: the keys the class sets
  itself (``onnx``, ``prior_file``, ``prior_scale``, and ``model``, which would
  name a second model) are refused, naming the key.
"""
from __future__ import annotations

from typing import Any, Optional

from sprintiface.config import OPTIONS
from sprintiface.errors import ConfigError, SprintifaceError

# SprintifaceFeatureScorer is made on first access by the module __getattr__ below (PEP 562),
# so that this module imports without i6_core.
__all__ = [
    "RESERVED_KEYS",
    "MissingDependencyError",
    "SprintifaceFeatureScorer",  # noqa: F822 - made by the module __getattr__ (PEP 562) when first asked for
    "pymod_config_items",
]

#: pymod-config keys the class writes from its own parameters (``model`` would name a second model).
RESERVED_KEYS = {"onnx": "onnx_model", "model": "onnx_model", "prior_file": "prior_file",
                 "prior_scale": "prior_scale"}
#: pymod-config is one comma-separated line of a RASR config: these would end an item or the value.
_FORBIDDEN = ',#;%"'


class MissingDependencyError(SprintifaceError, ImportError):
    """A sprintiface feature needs a package that is not importable (i6_core, Sisyphus)."""


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float))  # bool too: "True" parses as sprintiface's true


def pymod_config_items(onnx_model: Any, prior_file: Any = None, prior_scale: Optional[float] = None,
                       extra_config: Optional[dict[str, Any]] = None) -> list[tuple[str, Any]]:
    """The ``(key, value)`` items of the scorer's pymod-config, in the order written:
    ``onnx``, then ``prior_file`` and ``prior_scale`` (1.0 when not given), then
    ``extra_config`` sorted by key (so the hash does not depend on dict order).

    Values stay as given (a ``tk.Path`` is resolved when the config is written).
    Raises ConfigError for an ``extra_config`` key that repeats one of
    :data:`RESERVED_KEYS` or that sprintiface does not know, for a plain value
    sprintiface would refuse, for ``prior_scale`` without ``prior_file``, and for
    a key or value holding one of ``, # ; % "``.
    """
    if onnx_model is None:
        raise ConfigError("SprintifaceFeatureScorer: expected onnx_model (the ONNX acoustic model), got None")
    items: list[tuple[str, Any]] = [("onnx", onnx_model)]
    _check_characters("onnx", onnx_model)
    if prior_file is not None:
        items += [("prior_file", prior_file), ("prior_scale", 1.0 if prior_scale is None else prior_scale)]
        _check_characters("prior_file", prior_file)
    elif prior_scale:
        raise ConfigError(f"SprintifaceFeatureScorer: prior_scale {prior_scale!r} needs a prior_file; got none")
    extra = dict(extra_config or {})
    for key in sorted(extra):
        if not isinstance(key, str):
            raise ConfigError(f"SprintifaceFeatureScorer extra_config: expected str keys, got {key!r}")
        if key in RESERVED_KEYS:
            raise ConfigError(
                f"SprintifaceFeatureScorer extra_config: key {key!r} is set by the parameter "
                f"{RESERVED_KEYS[key]}; give it there, not in extra_config (RASR would stop at the scorer's "
                f"init with the key given twice)")
        if key not in OPTIONS:
            raise ConfigError(f"SprintifaceFeatureScorer extra_config: unknown sprintiface key {key!r}; "
                              f"known keys: {', '.join(OPTIONS)}")
        value = extra[key]
        if value is None:
            raise ConfigError(f"SprintifaceFeatureScorer extra_config: key {key!r} has the value None; "
                              f"expected a value or no key")
        _check_characters(key, value)
        if _plain(value):
            OPTIONS[key].parse(str(value), "in SprintifaceFeatureScorer's extra_config")
        items.append((key, value))
    return items


def _check_characters(key: str, value: Any) -> None:
    # A tk.Path or a delayed value is not final here; only what can be read now is checked.
    text = f"{key}{value}" if _plain(value) or hasattr(value, "get_path") else key
    bad = sorted({c for c in text if c in _FORBIDDEN})
    if bad:
        raise ConfigError(f"SprintifaceFeatureScorer: pymod-config item {key}:{value} holds "
                          f"{' '.join(bad)}; expected none of {' '.join(_FORBIDDEN)} (pymod-config is one "
                          f"comma-separated line)")


class _PymodPath:
    """``pymod_path`` as a config value: written as the path, hashed as a constant, so
    that it is not part of any job's hash (AlignmentJob hashes its post_config too)."""

    def __init__(self, path: Any):
        self.path = path

    def __str__(self) -> str:
        from sisyphus.delayed_ops import try_get

        return str(try_get(self.path))

    def _sis_hash(self) -> bytes:
        return b"(sprintiface.sisyphus.pymod_path)"


def _path_identity(path: Any) -> Optional[str]:
    return None if path is None else str(path)


def _build_class() -> type:
    try:
        from sisyphus.delayed_ops import DelayedFormat
        from i6_core.rasr.feature_scorer import FeatureScorer
    except ImportError as error:
        raise MissingDependencyError(
            f"sprintiface.sisyphus.SprintifaceFeatureScorer subclasses i6_core's FeatureScorer: it needs "
            f"i6_core and Sisyphus importable (on PYTHONPATH of the Sisyphus manager); importing them "
            f"failed: {error}") from error

    # i6_core has no type information: FeatureScorer is Any to mypy.
    class SprintifaceFeatureScorer(FeatureScorer):  # type: ignore[misc]
        """RASR's python-feature-scorer served by sprintiface, for i6_core's recognition
        and alignment jobs (the block of docs/recognition.md).

        :param mixtures: a mixture set RASR can read (unused by sprintiface), e.g.
            ``CreateDummyMixturesJob(num_mixtures=output_dimension, num_features=feature_dimension).out_mixtures``
        :param onnx_model: the ONNX acoustic model (sprintiface's ``onnx``)
        :param feature_dimension: features per frame, as the feature flow produces them
        :param output_dimension: emission classes (state-tying classes / CART leaves)
        :param prior_file: sprintiface's ``prior_file`` (RETURNN text, RASR XML or .npy, +log space)
        :param prior_scale: sprintiface's ``prior_scale``; with a prior file only (default 1.0)
        :param scale: RASR's acoustic scale on top of sprintiface's scores
        :param extra_config: more sprintiface keys, e.g. ``{"output_kind": "logits"}``; not
            ``onnx``, ``model``, ``prior_file``, ``prior_scale`` (ConfigError naming the key)
        :param pymod_path: a directory RASR's Python imports sprintiface from. Its value is in
            no job's hash; every scorer of one Sisyphus process must give the same one
            (ConfigError otherwise), since jobs differing only in it would be one job.

        All parameters are hashed (through the jobs' configs) except ``pymod_path``.
        """

        #: The pymod_path of the first scorer made in this process (see the class docstring).
        _process_pymod_path: Optional[tuple[Optional[str]]] = None

        def __init__(self, *, mixtures: Any, onnx_model: Any, feature_dimension: int, output_dimension: int,
                     prior_file: Any = None, prior_scale: Optional[float] = None, scale: float = 1.0,
                     extra_config: Optional[dict[str, Any]] = None, pymod_path: Any = None):
            super().__init__()
            items = pymod_config_items(onnx_model, prior_file, prior_scale, extra_config)
            for name, value in (("feature_dimension", feature_dimension), ("output_dimension", output_dimension)):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ConfigError(f"SprintifaceFeatureScorer: expected {name} to be an int > 0, "
                                      f"got {type(value).__name__} {value!r}")
            identity = _path_identity(pymod_path)
            seen = type(self)._process_pymod_path
            if seen is not None and seen[0] != identity:
                raise ConfigError(
                    f"SprintifaceFeatureScorer: pymod_path {identity!r} differs from {seen[0]!r} of an earlier "
                    f"scorer in this Sisyphus process; expected one pymod_path for all. It is not hashed, so "
                    f"jobs differing only in it are one job and the second one's path would never be written")
            type(self)._process_pymod_path = (identity,)
            self.config.feature_scorer_type = "python-feature-scorer"
            self.config.file = mixtures
            self.config.scale = scale
            self.config.feature_dimension = feature_dimension
            self.config.python_feature_scorer_output_dimension = output_dimension
            self.config.pymod_name = "sprintiface"
            # paths stay delayed: resolved when the RASR config is written, hashed as what they are
            self.config.pymod_config = DelayedFormat(",".join(f"{key}:{{}}" for key, _ in items),
                                                     *(value for _, value in items))
            if pymod_path is not None:
                self.post_config.pymod_path = _PymodPath(pymod_path)

        def lm_image_scorer(self) -> Any:
            """A GMM scorer on this scorer's mixture set, for ``AdvancedTreeSearchJob(lmgc_scorer=...)``:
            RASR's LM-image job builds the acoustic model's scorer without using it, and with this
            one it neither loads the ONNX model nor waits for the job that makes it."""
            from i6_core.rasr.feature_scorer import DiagonalMaximumScorer

            return DiagonalMaximumScorer(self.config.file)

    SprintifaceFeatureScorer.__module__ = __name__
    SprintifaceFeatureScorer.__qualname__ = "SprintifaceFeatureScorer"
    return SprintifaceFeatureScorer


def __getattr__(name: str) -> type:
    # PEP 562: the class exists only once asked for, so this module imports without i6_core;
    # stored in the module so pickle (Sisyphus saves its graph) finds the same class.
    if name == "SprintifaceFeatureScorer":
        cls = _build_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
