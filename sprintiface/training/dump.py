"""The dump trainer (``trainer:dump``): every segment into one HDF5 file, in the
layout RETURNN's HDFDataset reads."""
from __future__ import annotations

import os

import numpy

from sprintiface.config import Config
from sprintiface.errors import ConfigError
from sprintiface.training.protocol import Segment, Trainer


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
                                                  maxshape=(None, 1 + len(self.keys)),
                                                  chunks=(1024, 1 + len(self.keys)))
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
        if self._file is None:
            return
        self._file.attrs["inputPattSize"] = self.input_dim
        self._file.attrs["numSeqs"] = self.num_segments
        self._file.attrs["numTimesteps"] = self.num_frames
        self._file.close()
        self._file = None
        os.replace(self._temporary, self.path)
