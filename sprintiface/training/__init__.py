"""Training with RASR's nn-trainer: sprintiface's PythonTrainer and the segment schedule.

- :mod:`~sprintiface.training.session`: the RASR calls (init, feedInput*,
  finishError, exit) and the process state they share with getSegmentList;
- :mod:`~sprintiface.training.protocol`: what a learner implements
  (:class:`Trainer`) and gets (:class:`Segment`);
- :mod:`~sprintiface.training.dump`: the built-in ``dump`` trainer (HDF5 in
  RETURNN's layout);
- :mod:`~sprintiface.training.torch_trainer`: the built-in ``torch`` trainer (needs
  ``sprintiface[torch]``; imported only when chosen), with
  :mod:`~sprintiface.training.torch_export` (its per-epoch checkpoint and ONNX
  model) and :mod:`~sprintiface.training.torch_distributed` (several processes);
- :mod:`~sprintiface.training.schedule`: which segment belongs to which epoch,
  shared by the segment ordering and the trainer; checkpoints' done markers.
"""
from sprintiface.training.protocol import Segment, Trainer

__all__ = ["Segment", "Trainer"]
