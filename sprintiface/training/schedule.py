"""The epoch schedule: which segments RASR feeds in which epoch.

With ``python-segment-order = true`` RASR gets its segment names from
sprintiface's ``getSegmentList`` (:mod:`sprintiface.segment_order`), which
makes an :class:`EpochSchedule` and hands RASR the schedule's generator over
epochs ``first .. last``. The trainer session of the same process holds the
same schedule object and asks it, for every segment RASR feeds, which epoch
that segment belongs to (:meth:`EpochSchedule.locate`): by its name and its
place in the plan, never by counting what the generator yielded, so RASR may
read names ahead, skip segments, or feed one corpus partition of several
(RASR filters partitions after the ordering) without shifting an epoch.

An epoch is complete for the trainer when a segment of a later epoch arrives,
or at RASR's exit() once the generator has handed out all of it. A job that
ends otherwise completes nothing, so a resumed job repeats a half-done epoch.
Without sprintiface's segment ordering the whole run is one epoch, complete
at exit().

Which epochs are finished (``first_epoch``; a restarted job starts after the
last one): with ``checkpoint_dir``, the ``epoch.NNN.done`` files there (the
session writes one after the trainer's checkpoint). Without it, for
``trainer:torch`` (which writes its checkpoints next to ``model`` whatever
``checkpoint_dir`` says), an epoch is finished when both of its files exist,
``<model>.NNN.pt`` and ``<model>.NNN.onnx``: each is written under a temporary
name and renamed when complete, the .onnx after the .pt, and a .onnx left from
an earlier attempt at the epoch is removed before its .pt is written, so both
exist only once the epoch is done (:func:`last_written_epoch`). This module
decides it from the files alone, without importing the trainer (or torch).
"""
from __future__ import annotations

import os
import re
from typing import Callable, Optional
from collections.abc import Iterator, Sequence

import numpy

from sprintiface.config import Config
from sprintiface.log import logger

_DONE_MARKER = re.compile(r"^epoch\.(\d+)\.done$")
#: The trainer whose epochs are recorded by its files ``<model>.NNN.pt`` and ``.onnx``.
_TORCH_TRAINER = "sprintiface.training.torch_trainer:TorchTrainer"


def done_marker(directory: str, epoch: int) -> str:
    """Path of the marker that says ``epoch`` finished (written after its checkpoint)."""
    return os.path.join(directory, f"epoch.{epoch:03d}.done")


def last_finished_epoch(checkpoint_dir: Optional[str], before: Optional[int] = None) -> int:
    """Highest epoch (below ``before``, if given) with a done marker in ``checkpoint_dir``; 0 for none."""
    if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
        return 0
    epochs = [int(m.group(1)) for m in map(_DONE_MARKER.match, os.listdir(checkpoint_dir)) if m]
    if before is not None:
        epochs = [epoch for epoch in epochs if epoch < before]
    return max(epochs, default=0)


def last_written_epoch(model: Optional[str]) -> int:
    """Highest epoch N with both ``<model>.NNN.pt`` and ``<model>.NNN.onnx``; 0 for none."""
    if not model:
        return 0
    directory, base = os.path.split(os.path.abspath(model))
    pattern = re.compile(re.escape(base) + r"\.(\d{3,})\.(pt|onnx)")
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    found: dict[int, set[str]] = {}
    for name in names:
        match = pattern.fullmatch(name)
        if match:
            found.setdefault(int(match.group(1)), set()).add(match.group(2))
    return max((epoch for epoch, kinds in found.items() if kinds == {"pt", "onnx"}), default=0)


def records_epochs_in_model_files(config: Config) -> bool:
    """Whether ``config`` trains with ``trainer:torch``, whose files under ``model`` record
    the finished epochs (when no ``checkpoint_dir`` does)."""
    from sprintiface.training.protocol import BUILT_IN

    return config.action == "train" and bool(config.model) and \
        BUILT_IN.get(config.trainer, config.trainer) == _TORCH_TRAINER


def last_complete_epoch(config: Config) -> int:
    """The last finished epoch: by the done markers in ``checkpoint_dir``, else (trainer:torch)
    by the epoch files under ``model``; 0 for none."""
    if config.checkpoint_dir:
        return last_finished_epoch(config.checkpoint_dir)
    if records_epochs_in_model_files(config):
        return last_written_epoch(config.model)
    return 0


def first_epoch(config: Config) -> int:
    """``start_epoch``, else the epoch after the last finished one (:func:`last_complete_epoch`), else 1."""
    if config.start_epoch is not None:
        return config.start_epoch
    return last_complete_epoch(config) + 1


class EpochSchedule:
    """The plan of one getSegmentList call: the segment names of every epoch.

    ``epoch_segments(epoch)`` gives an epoch's names in order (a pure function
    of the corpus, the config and the epoch: RASR may ask again, to count).
    Iterating the schedule yields every name of epochs ``first .. last``.
    """

    #: How far back from the generator's place a fed segment is looked for first.
    LOOK_BACK = 256

    def __init__(self, names: Sequence[str], config: Config,
                 order: Callable[[Config, int], numpy.ndarray], first: Optional[int] = None):
        self.names = list(names)
        self.config = config
        self.first = first_epoch(config) if first is None else first
        self.last = config.num_epochs
        self._order = order
        self._lists: dict[int, list[str]] = {}
        # The generator's place (epoch, index of the name yielded last) and the
        # trainer's (epoch, index of the segment fed last); index -1: none yet.
        self._yielded: Optional[tuple[int, int]] = None
        self._generated_through = self.first - 1
        self._fed = (self.first, -1)
        if self.first > self.last:
            if config.start_epoch is not None and first is None:
                why = f"start_epoch {config.start_epoch} is after num_epochs {self.last}"
            elif config.checkpoint_dir:
                why = f"epochs 1..{self.first - 1} are marked finished in checkpoint_dir {config.checkpoint_dir!r}"
            else:
                why = f"epochs 1..{self.first - 1} are finished ({config.model}.{self.first - 1:03d}.pt and .onnx)"
            logger.warning("segment order: %s, num_epochs %d: nothing to train, the segment list is empty "
                           "(raise num_epochs to train on)", why, self.last)

    def epoch_segments(self, epoch: int) -> list[str]:
        """The segment names of ``epoch``, in the order RASR gets them."""
        names = self._lists.get(epoch)
        if names is None:
            names = [self.names[i] for i in self._order(self.config, epoch)]
            # Keep only the epochs the generator and the trainer can still be in.
            low = min(self._fed[0], self._yielded[0] if self._yielded else self._fed[0])
            self._lists = {e: n for e, n in self._lists.items() if e >= low}
            self._lists[epoch] = names
        return names

    def __iter__(self) -> Iterator[str]:
        for epoch in range(self.first, self.last + 1):
            for index, name in enumerate(self.epoch_segments(epoch)):
                self._yielded = (epoch, index)
                yield name
            self._generated_through = epoch

    def handed_out(self, epoch: int) -> bool:
        """Whether the generator has yielded every segment of ``epoch``."""
        return self._generated_through >= epoch

    # -- the trainer's side ----------------------------------------------------

    def locate(self, name: Optional[str]) -> int:
        """The epoch of the segment ``name`` that the trainer is fed now.

        The segment is searched between the last one fed and the generator's
        place, from the latest back (RASR feeds what it was handed, possibly a
        few names late); without a generator running, forward from the last one
        fed through the next epoch. A name that is not found (or None) belongs
        to the generator's epoch, else to the current one.
        """
        found = None
        if name is not None:
            found = self._search_back(name) if self._yielded is not None else self._search_forward(name)
        if found is None:  # unknown: where the generator is (RASR feeds what it was handed)
            found = max(self._fed, self._yielded) if self._yielded is not None else self._fed
        self._fed = found
        return found[0]

    def _search_back(self, name: str) -> Optional[tuple[int, int]]:
        assert self._yielded is not None  # locate searches back only once the generator yielded
        epoch, index = self._yielded
        budget = self.LOOK_BACK
        while (epoch, index) > self._fed and budget > 0:
            if index < 0:
                epoch -= 1
                if epoch < self.first:
                    return None
                index = len(self.epoch_segments(epoch)) - 1
                continue
            if self.epoch_segments(epoch)[index] == name:
                return epoch, index
            index -= 1
            budget -= 1
        return self._search_forward(name) if budget == 0 else None

    def _search_forward(self, name: str) -> Optional[tuple[int, int]]:
        epoch, after = self._fed
        for candidate in (epoch, epoch + 1):
            if candidate > self.last:
                break
            names = self.epoch_segments(candidate)
            start = after + 1 if candidate == epoch else 0
            try:
                return candidate, names.index(name, start)
            except ValueError:
                continue
        return None
