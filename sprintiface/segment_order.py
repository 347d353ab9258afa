"""PythonSegmentOrdering: which segments RASR processes, in which order, epoch by epoch.

RASR calls ``getSegmentList(corpusName, segmentList, segmentsInfo, config)``
(``python-segment-order = true``) and processes every name as soon as the
returned iterator yields it, so one generator spanning epochs
``first .. num_epochs`` drives a whole training. The generator is an
:class:`sprintiface.training.schedule.EpochSchedule`, which the trainer of the
same process shares to know the epoch of each segment it is fed. RASR may call
getSegmentList more than once (once just to count), so the order is a pure
function of the corpus, the config and the epoch.

Epoch ``e`` with ``partition_epoch = N`` is part ``(e - 1) % N`` of the
ordering of pass ``(e - 1) // N`` over the corpus, so N consecutive epochs see
every segment exactly once; random orderings are seeded by ``seed`` and the
pass.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Optional

import numpy
import numpy.typing

from sprintiface.config import Config
from sprintiface.errors import ConfigError, ProtocolError
from sprintiface.log import logger

if TYPE_CHECKING:
    from sprintiface.training.schedule import EpochSchedule

#: Frames per second of RASR's usual 10 ms frame shift: converts segmentsInfo's "time" to frames.
FRAMES_PER_SECOND = 100


def _number(value: object) -> bool:
    return isinstance(value, (int, float, numpy.integer, numpy.floating)) and not isinstance(value, bool) \
        and bool(numpy.isfinite(value)) and bool(value >= 0)


def segment_lengths(names: Sequence[str], segments_info: object, ordering: str) -> numpy.typing.NDArray[numpy.float64]:
    """Length in frames of every segment of ``names``, from RASR's ``segmentsInfo``.

    ``nframes`` when every segment has it (RASR passes it only with
    ``use-data-source = true``), else ``time`` (seconds, always passed) times
    :data:`FRAMES_PER_SECOND` (a segment without ``time`` keeps its
    ``nframes``). Only the order of the lengths matters to the orderings.
    """
    if segments_info is None:
        raise ConfigError(
            f"config key 'seq_ordering' is {ordering!r}, which needs segment lengths, but RASR passed no "
            f"segmentsInfo: set python-segment-order-with-segment-info = true")
    if not isinstance(segments_info, Mapping):
        raise ProtocolError(f"getSegmentList: expected segmentsInfo to be a dict of segment name -> "
                            f"{{'time': seconds, 'nframes': frames}}, got {type(segments_info).__name__}")
    entries = []
    for name in names:
        entry = segments_info.get(name)
        if not isinstance(entry, Mapping):
            got = "no entry" if entry is None else f"a {type(entry).__name__}"
            raise ConfigError(f"seq_ordering {ordering!r} needs the length of segment {name!r}, but segmentsInfo "
                              f"has {got} for it; expected a dict with 'time' (seconds) or 'nframes'")
        for key in ("nframes", "time"):
            if key in entry and not _number(entry[key]):
                raise ConfigError(f"seq_ordering {ordering!r}: segmentsInfo[{name!r}][{key!r}] is {entry[key]!r}; "
                                  f"expected a finite number >= 0")
        if "nframes" not in entry and "time" not in entry:
            raise ConfigError(f"seq_ordering {ordering!r}: segmentsInfo[{name!r}] has neither 'nframes' nor 'time' "
                              f"(got keys {sorted(map(str, entry))}); expected 'time' in seconds")
        entries.append(entry)
    if all("nframes" in entry for entry in entries):
        logger.info("segment order %s: lengths from segmentsInfo's 'nframes'", ordering)
        return numpy.array([entry["nframes"] for entry in entries], dtype=numpy.float64)
    logger.info("segment order %s: lengths from segmentsInfo's 'time' (x %d frames per second)", ordering,
                FRAMES_PER_SECOND)
    return numpy.array([entry["time"] * FRAMES_PER_SECOND if "time" in entry else entry["nframes"]
                        for entry in entries], dtype=numpy.float64)


def pass_order(num_segments: int, ordering: str, seed: int, corpus_pass: int,
               lengths: Optional[numpy.typing.NDArray[numpy.float64]]) -> numpy.typing.NDArray[numpy.intp]:
    """Indices of one pass over the corpus in ``ordering`` (see the module docstring).
    ``lengths`` (frames per segment) is needed by the sorted and laplace orderings."""
    rng = numpy.random.default_rng([seed, corpus_pass])
    if ordering == "default":
        return numpy.arange(num_segments)
    if ordering == "random":
        return rng.permutation(num_segments)
    if lengths is None:
        raise ConfigError(f"seq_ordering {ordering!r} orders by length, but no segment lengths were given")
    if ordering == "sorted":
        return numpy.argsort(lengths, kind="stable")
    if ordering == "sorted_reverse":
        return numpy.argsort(-lengths, kind="stable")
    # laplace:N: random bins of N, each sorted by length, directions alternating so
    # that neighbouring bins meet at similar lengths.
    size = int(ordering.split(":", 1)[1])
    shuffled = rng.permutation(num_segments)
    bins = []
    for number, start in enumerate(range(0, num_segments, size)):
        chunk = shuffled[start:start + size]
        chunk = chunk[numpy.argsort(lengths[chunk], kind="stable")]
        bins.append(chunk[::-1] if number % 2 else chunk)
    return numpy.concatenate(bins) if bins else numpy.arange(0)


def epoch_order(num_segments: int, config: Config, epoch: int,
                lengths: Optional[numpy.typing.NDArray[numpy.float64]]) -> numpy.typing.NDArray[numpy.intp]:
    """Indices of the segments of ``epoch`` (1-based), in order."""
    parts = config.partition_epoch
    corpus_pass, part = divmod(epoch - 1, parts)
    order = pass_order(num_segments, config.seq_ordering, config.seed, corpus_pass, lengths)
    bounds = numpy.linspace(0, len(order), parts + 1).round().astype(int)
    return order[bounds[part]:bounds[part + 1]]


def make_schedule(segment_list: Sequence[str], segments_info: object, config: Config) -> EpochSchedule:
    """The :class:`~sprintiface.training.schedule.EpochSchedule` of ``segment_list`` under ``config``.

    The config is checked here, at the call, so that a bad key stops RASR
    before the first segment; iterating the schedule only yields.
    """
    from sprintiface.training.schedule import EpochSchedule

    if isinstance(segment_list, (str, bytes)) or not isinstance(segment_list, Iterable):
        raise ProtocolError(f"getSegmentList: expected segmentList to be a list of segment names, "
                            f"got {type(segment_list).__name__}")
    names = list(segment_list)
    for name in names:
        if not isinstance(name, str):
            raise ProtocolError(f"getSegmentList: expected segmentList to hold segment names (str), "
                                f"got {name!r} ({type(name).__name__})")
    lengths = None
    if config.seq_ordering.startswith(("sorted", "laplace")):
        lengths = segment_lengths(names, segments_info, config.seq_ordering)
    return EpochSchedule(names, config, lambda cfg, epoch: epoch_order(len(names), cfg, epoch, lengths))
