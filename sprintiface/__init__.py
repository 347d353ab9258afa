"""sprintiface: the Python module RASR (Sprint) loads, standalone, on ONNX Runtime.

Set ``pymod-name = sprintiface`` in RASR. The module-level names below are
what RASR calls (always with keyword arguments); they keep RETURNN's
``returnn.sprint.interface`` names and parameters and delegate at once:

- feature scorer (recognition, alignment): :mod:`sprintiface.feature_scorer`;
- trainer (nn-trainer with ``trainer = python-trainer``) and segment ordering
  (``python-segment-order = true``): :mod:`sprintiface.training.session`, whose
  one :class:`~sprintiface.training.session.TrainingProcess` per process holds
  the epoch schedule both share.

camelCase names exist only as this compatibility surface.
"""
from __future__ import annotations

import os as _os
import typing as _typing
from typing import Any, Optional

try:
    from sprintiface import _buffer  # noqa: F401 - the compiled part, built by pip install
except ImportError as _error:  # pragma: no cover - only in an unbuilt source tree
    _here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.exists(_os.path.join(_here, "_buffer.pyx")):
        raise ImportError(
            f"sprintiface was imported from its unbuilt source folder {_here}, not from the installed "
            f"package: Python puts the working directory first on sys.path. Use the installed command "
            f"(`sprintiface ...`), run Python from another directory, or build in place with "
            f"`pip install -e .`") from _error
    raise

from sprintiface._version import __version__
from sprintiface.errors import (ConfigError, FeatureError, ModelError, PriorError, ProtocolError,
                                ScoreError, SprintifaceError, TrainerError)
from sprintiface.log import logger as _logger
from sprintiface.feature_scorer import PythonFeatureScorer, init_python_feature_scorer

if _typing.TYPE_CHECKING:
    from collections.abc import Iterator

    from numpy import ndarray

    from sprintiface.dataset import InMemoryDataset
    from sprintiface.training.protocol import Trainer
    from sprintiface.training.session import TrainingProcess


def _training() -> TrainingProcess:
    """This process's TrainingProcess (RASR runs one trainer per process): the epoch
    schedule the segment order made and the session init started. Made at the first
    trainer or segment-order call, so that a recognition job never imports the
    training package."""
    global _training_process
    if _training_process is None:
        from sprintiface.training.session import TrainingProcess

        _training_process = TrainingProcess()
    return _training_process


_training_process: Optional[TrainingProcess] = None

__all__ = [
    "ConfigError",
    "FeatureError",
    "ModelError",
    "PriorError",
    "ProtocolError",
    "PythonFeatureScorer",
    "ScoreError",
    "SprintifaceError",
    "TrainerError",
    "__version__",
    "demo",
    "dump_flags",
    "exit",
    "features_to_dataset",
    "feedInput",
    "feedInputAndTarget",
    "feedInputAndTargetAlignment",
    "feedInputAndTargetSegmentOrth",
    "feedInputForwarding",
    "feedInputUnsupervised",
    "finishDiscard",
    "finishError",
    "getSegmentList",
    "get_final_epoch",
    "init",
    "init_python_feature_scorer",
    "init_python_trainer",
    "make_criterion_class",
    "set_target_mode",
]


def init(name: Optional[str] = None, sprint_unit: Optional[str] = None, **kwargs: Any) -> Optional[PythonFeatureScorer]:
    """Called by RASR first. ``name`` None is the PythonTrainer (returns None);
    ``name="Sprint.PythonControl"`` with ``sprint_unit="PythonFeatureScorer"``
    returns the scorer object RASR then calls."""
    if name is None:
        init_python_trainer(**kwargs)
        return None
    if name == "Sprint.PythonControl" and sprint_unit == "PythonFeatureScorer":
        return init_python_feature_scorer(**kwargs)
    raise ProtocolError(
        f"init(name={name!r}, sprint_unit={sprint_unit!r}): sprintiface serves name=None (PythonTrainer) "
        f"and name='Sprint.PythonControl' with sprint_unit='PythonFeatureScorer'")


# -- PythonSegmentOrdering -------------------------------------------------------

def getSegmentList(corpusName: str, segmentList: Any, **kwargs: Any) -> Iterator[str]:
    """RASR's python-segment-order: an iterator over segment names for all epochs.
    Keywords: ``segmentsInfo`` (name -> {"nframes", "time"} or None), ``config``."""
    order: Iterator[str] = _training().segment_list(corpusName, segmentList, kwargs.get("segmentsInfo"),
                                                    kwargs.get("config"))
    return order


# -- PythonTrainer -----------------------------------------------------------------

def init_python_trainer(inputDim: int, outputDim: int, config: str, targetMode: str, **kwargs: Any) -> None:
    """Start the training session (RASR calls it lazily, with the first segment's data). Returns None."""
    _training().start(inputDim=inputDim, outputDim=outputDim, config=config, targetMode=targetMode, **kwargs)


def exit() -> None:  # RASR's name; shadows the builtin inside this module only
    """RASR's end of training: drain the trainer's queue, finish, join."""
    _training().exit()


def feedInput(features: ndarray, weights: Optional[ndarray] = None, segmentName: Optional[str] = None) -> ndarray:
    """criterion-by-sprint: posteriors (outputDim, T) float32, Fortran order; finishError or
    finishDiscard follows."""
    session = _training().require_session()
    return session.forward_for_criterion(session.segment(features, weights, segmentName))


def finishDiscard() -> None:
    """criterion-by-sprint: RASR drops the segment of the last feedInput."""
    _training().require_session().finish_discard()


def finishError(error: float, errorSignal: ndarray, naturalPairingType: Optional[str] = None) -> None:
    """criterion-by-sprint: RASR's loss and error signal (outputDim, T) for the last feedInput."""
    _training().require_session().finish_error(error, errorSignal, naturalPairingType)


def feedInputAndTarget(features: ndarray, weights: Optional[ndarray] = None, segmentName: Optional[str] = None,
                       orthography: Optional[str] = None, alignment: Optional[ndarray] = None,
                       speaker_name: Optional[str] = None, speaker_gender: Optional[str] = None,
                       **kwargs: Any) -> None:
    """target-generic: features with any of alignment, orthography, speaker."""
    session = _training().require_session()
    session.train(session.segment(features, weights, segmentName, alignment=alignment, orthography=orthography,
                                  speaker_name=speaker_name, speaker_gender=speaker_gender))


def feedInputAndTargetAlignment(features: ndarray, targetAlignment: ndarray, weights: Optional[ndarray] = None,
                                segmentName: Optional[str] = None) -> None:
    """target-alignment: features with a uint32 class index per frame."""
    session = _training().require_session()
    session.train(session.segment(features, weights, segmentName, alignment=targetAlignment))


def feedInputAndTargetSegmentOrth(features: ndarray, targetSegmentOrth: str, weights: Optional[ndarray] = None,
                                  segmentName: Optional[str] = None) -> None:
    """target-segment-orth: features with the segment's orthography."""
    session = _training().require_session()
    session.train(session.segment(features, weights, segmentName, orthography=targetSegmentOrth))


def feedInputUnsupervised(features: ndarray, weights: Optional[ndarray] = None,
                          segmentName: Optional[str] = None) -> None:
    """unsupervised: features only."""
    session = _training().require_session()
    session.train(session.segment(features, weights, segmentName))


def feedInputForwarding(features: ndarray, weights: Optional[ndarray] = None,
                        segmentName: Optional[str] = None) -> ndarray:
    """forward-only: posteriors (outputDim, T) float32, Fortran order."""
    session = _training().require_session()
    return session.forward(session.segment(features, weights, segmentName))


def features_to_dataset(features: ndarray, segment_name: Optional[str]) -> tuple[InMemoryDataset, int]:
    """RASR-layout features (input_dim, T) -> ``(dataset, seq_idx)`` (sprintiface.dataset)."""
    from sprintiface.dataset import features_to_dataset as convert

    return convert(features, segment_name)


def dump_flags() -> dict[str, Optional[str]]:
    """Log and return the environment flags that decide threading and placement."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTHONPATH")
    flags = {name: _os.environ.get(name) for name in names}
    for name, value in flags.items():
        _logger.info("%s = %r", name, value)
    return flags


def set_target_mode(mode: str) -> None:
    """Override RASR's targetMode for the training session (RETURNN's set_target_mode)."""
    _training().set_target_mode(mode)


def get_final_epoch() -> int:
    """The last epoch (``num_epochs``) of the trainer's or the segment ordering's config."""
    return _training().final_epoch()


def make_criterion_class() -> type[Trainer]:
    """The criterion-by-sprint round trip as a class (RETURNN returned a Theano op):
    :class:`sprintiface.training.Trainer`, whose forward/backward hooks receive the
    posteriors RASR scores and the error signal it sends back."""
    from sprintiface.training.protocol import Trainer

    return Trainer


def demo() -> None:
    """Replay RASR's scorer protocol and a RASR training run on the shipped model."""
    from sprintiface.demos import run_scorer_demo, run_training_demo

    run_scorer_demo()
    run_training_demo()
