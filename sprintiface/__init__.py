"""sprintiface: the Python module RASR (Sprint) loads, standalone, on ONNX Runtime.

Set ``pymod-name = sprintiface`` in RASR. The module-level names below are
what RASR calls (always with keyword arguments); they keep RETURNN's
``returnn.sprint.interface`` names and parameters and delegate at once:

- feature scorer (recognition, alignment): :mod:`sprintiface.scorer`;
- trainer (nn-trainer with ``trainer = python-trainer``): :mod:`sprintiface.training`;
- segment ordering (``python-segment-order = true``): :mod:`sprintiface.segment_order`.
"""
from sprintiface._version import __version__
from sprintiface.errors import (ConfigError, FeatureError, ModelError, PriorError, ProtocolError,
                                ScoreError, SprintifaceError, TrainerError)
from sprintiface.scorer import PythonFeatureScorer, init_python_feature_scorer

__all__ = [
    "__version__", "init", "init_python_feature_scorer", "PythonFeatureScorer",
    "SprintifaceError", "ConfigError", "ModelError", "PriorError", "FeatureError", "ProtocolError",
    "ScoreError", "TrainerError",
]


def init(name=None, sprint_unit=None, **kwargs):
    """Called by RASR first. ``name`` None is the PythonTrainer (returns None);
    ``name="Sprint.PythonControl"`` with ``sprint_unit="PythonFeatureScorer"``
    returns the scorer object RASR then calls."""
    if name is None:
        from sprintiface import training

        return training.init_python_trainer(**kwargs)
    if name == "Sprint.PythonControl" and sprint_unit == "PythonFeatureScorer":
        return init_python_feature_scorer(**kwargs)
    raise ProtocolError(
        f"init(name={name!r}, sprint_unit={sprint_unit!r}): sprintiface serves name=None (PythonTrainer) "
        f"and name='Sprint.PythonControl' with sprint_unit='PythonFeatureScorer'")
