"""The trainer protocol: what sprintiface hands a learner when RASR trains.

RASR's PythonTrainer feeds one segment per call; sprintiface turns each call
into a :class:`Segment` and calls a :class:`Trainer`:

    start_epoch(epoch)                   # first segment of an epoch arrives
    train_segment(segment)               # every segment (background thread if queue_size > 0)
    forward(segment) -> (T', C)          # criterion-by-sprint: posteriors RASR computes the loss on
    backward(segment, error, error_signal, natural_pairing_type)   # ... and RASR's gradient
    end_epoch(epoch)                     # after the epoch's last segment (seen at the next one / exit)
    save_checkpoint(directory, epoch)    # after end_epoch, with checkpoint_dir
    load_checkpoint(directory, epoch)    # before the first start_epoch of a resumed job
    finish()                             # once, at exit (also when RASR never calls exit)

Segments arrive one at a time; a learner that trains on batches collects them
in train_segment and flushes in end_epoch / finish. Calls come from one thread
at a time, in order.

Choose the trainer with ``trainer:<name>`` (built in: ``dump``) or
``trainer:package.module:factory``; the factory is called as
``factory(config=, input_dim=, output_dim=, target_mode=)``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy

from sprintiface.config import Config
from sprintiface.errors import ConfigError, TrainerError


@dataclass
class Segment:
    """One segment as RASR fed it, time-major.

    ``features``: float32 (T, input_dim) (RASR's Fortran (input_dim, T) array,
    transposed: no copy in RASR's thread, a copy when queued for a background
    thread). ``alignment``: uint32 (T,) class indices or None. ``weights``:
    float32 (T,) or None. Strings are None where RASR gave none.
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

    def detached(self) -> "Segment":
        """A copy that owns its arrays (RASR may reuse its buffers after the call returns)."""
        copy = lambda a: None if a is None else numpy.array(a, copy=True)  # noqa: E731
        return Segment(self.name, numpy.ascontiguousarray(self.features).copy(), self.epoch,
                       copy(self.alignment), self.orthography, copy(self.weights), self.speaker_name,
                       self.speaker_gender)


class Trainer:
    """Base class of trainers; every hook but train_segment does nothing by default.

    ``engine`` is the ONNX engine when the config names a model (onnx/model), else None;
    the default :meth:`forward` serves criterion-by-sprint from it.
    """

    def __init__(self, config: Config, input_dim: int, output_dim: int, target_mode: str, engine=None):
        self.config = config
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.target_mode = target_mode
        self.engine = engine

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
        return self.engine.posteriors(numpy.ascontiguousarray(segment.features))

    def backward(self, segment: Segment, error: float, error_signal: numpy.ndarray,
                 natural_pairing_type: Optional[str]) -> None:
        """RASR's criterion result for the last forward(): ``error_signal`` float32 (T, output_dim),
        the gradient w.r.t. the softmax input when ``natural_pairing_type == "softmax"``."""

    def end_epoch(self, epoch: int) -> None:
        pass

    def save_checkpoint(self, directory: str, epoch: int) -> None:
        pass

    def load_checkpoint(self, directory: str, epoch: int) -> None:
        pass

    def finish(self) -> None:
        pass


class DumpTrainer(Trainer):
    """Writes every segment to ``dump_file`` in the layout RETURNN's HDFDataset reads.

    Layout: ``inputs`` float32 (total frames, input_dim); ``seqTags``;
    ``seqLengths`` int32 (segments, 1 + keys) with the input length first and the
    target keys in sorted order; ``targets/data/<key>``, ``targets/size``
    (attrs key -> [dim, ndim]) and ``targets/labels/<key>``; attrs
    ``inputPattSize``, ``numSeqs``, ``numTimesteps``. Target keys: ``classes``
    (alignment, int32) where the target mode has alignments, ``orth`` (UTF-8 bytes)
    where it has orthographies, ``speaker_name`` / ``speaker_gender`` (UTF-8
    bytes) for target-generic, and ``weights`` (float32, length 0 where RASR gave
    none). Written under a temporary name, renamed at finish().
    """

    def __init__(self, config: Config, input_dim: int, output_dim: int, target_mode: str, engine=None):
        super().__init__(config, input_dim, output_dim, target_mode, engine)
        try:
            import h5py
        except ImportError:
            raise ConfigError("trainer 'dump' needs h5py: pip install 'sprintiface[hdf5]'") from None
        if not config.dump_file:
            raise ConfigError("trainer 'dump' needs config key 'dump_file' (the HDF5 file to write)")
        from sprintiface._files import temporary_path_for

        self.path = config.dump_file
        self.keys = {"weights": (1, 1)}
        if target_mode in ("target-alignment", "target-generic"):
            self.keys["classes"] = (output_dim, 1)
        if target_mode in ("target-segment-orth", "target-generic"):
            self.keys["orth"] = (256, 1)
        if target_mode == "target-generic":
            self.keys["speaker_name"] = (256, 1)
            self.keys["speaker_gender"] = (256, 1)
        self.keys = dict(sorted(self.keys.items()))
        self._temporary = temporary_path_for(self.path)
        self._file = h5py.File(self._temporary, "w")
        string = h5py.string_dtype("utf-8")
        self._inputs = self._file.create_dataset("inputs", (0, input_dim), "float32", maxshape=(None, input_dim),
                                                 chunks=(max(1, 65536 // input_dim), input_dim))
        self._tags = self._file.create_dataset("seqTags", (0,), string, maxshape=(None,), chunks=(1024,))
        self._lengths = self._file.create_dataset("seqLengths", (0, 1 + len(self.keys)), "int32",
                                                  maxshape=(None, 1 + len(self.keys)), chunks=(1024, 1 + len(self.keys)))
        dtypes = {"classes": "int32", "weights": "float32"}
        self._targets = {
            key: self._file.create_dataset(f"targets/data/{key}", (0,), dtypes.get(key, "uint8"),
                                           maxshape=(None,), chunks=(65536,))
            for key in self.keys
        }
        size = self._file.require_group("targets/size")
        labels = self._file.require_group("targets/labels")
        for key, (dim, ndim) in self.keys.items():
            size.attrs[key] = numpy.array([dim, ndim], dtype="int32")
            labels.create_dataset(key, (0,), string)
        self.num_segments = 0
        self.num_frames = 0

    def train_segment(self, segment: Segment) -> None:
        values = {
            "classes": segment.alignment.astype("int32") if segment.alignment is not None else None,
            "weights": segment.weights,
            "orth": segment.orthography,
            "speaker_name": segment.speaker_name,
            "speaker_gender": segment.speaker_gender,
        }
        row = [segment.num_frames]
        for key in self.keys:
            value = values[key]
            if isinstance(value, str):
                value = numpy.frombuffer(value.encode("utf-8"), dtype="uint8")
            data = numpy.zeros(0) if value is None else numpy.asarray(value).reshape(-1)
            self._append(self._targets[key], data)
            row.append(data.shape[0])
        self._append(self._inputs, segment.features)
        self._append(self._tags, numpy.array([segment.name or f"seq-{self.num_segments}"], dtype=object))
        self._append(self._lengths, numpy.array([row], dtype="int32"))
        self.num_segments += 1
        self.num_frames += segment.num_frames

    @staticmethod
    def _append(dataset, data) -> None:
        start = dataset.shape[0]
        dataset.resize(start + data.shape[0], axis=0)
        if data.shape[0]:
            dataset[start:] = data

    def finish(self) -> None:
        import os

        if self._file is None:
            return
        self._file.attrs["inputPattSize"] = self.input_dim
        self._file.attrs["numSeqs"] = self.num_segments
        self._file.attrs["numTimesteps"] = self.num_frames
        self._file.close()
        self._file = None
        os.replace(self._temporary, self.path)


BUILT_IN: Dict[str, Callable[..., Trainer]] = {"dump": DumpTrainer}


def make_trainer(config: Config, input_dim: int, output_dim: int, target_mode: str, engine=None) -> Trainer:
    """The trainer ``config.trainer`` names (a built-in name or ``package.module:factory``)."""
    name = config.trainer
    if name in BUILT_IN:
        return BUILT_IN[name](config, input_dim, output_dim, target_mode, engine)
    if ":" not in name:
        raise ConfigError(f"config key 'trainer': expected one of {', '.join(BUILT_IN)} or package.module:factory; "
                          f"got {name!r}")
    module_name, factory_name = name.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"config key 'trainer': cannot load {name!r}: {error}") from None
    trainer = factory(config=config, input_dim=input_dim, output_dim=output_dim, target_mode=target_mode)
    if not isinstance(trainer, Trainer):
        raise ConfigError(f"config key 'trainer': {name!r} made a {type(trainer).__name__}, "
                          f"expected a sprintiface.trainers.Trainer")
    if trainer.engine is None:
        trainer.engine = engine
    return trainer
