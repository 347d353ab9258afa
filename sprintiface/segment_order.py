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

from typing import Dict, Optional, Sequence

import numpy

from sprintiface.config import Config
from sprintiface.errors import ConfigError


def _lengths(names: Sequence[str], segments_info: Optional[Dict[str, dict]], ordering: str) -> numpy.ndarray:
    if not segments_info:
        raise ConfigError(
            f"config key 'seq_ordering' is {ordering!r}, which needs segment lengths, but RASR passed no "
            f"segmentsInfo: set python-segment-order-with-segment-info = true")
    try:
        return numpy.array([int(segments_info[name]["nframes"]) for name in names], dtype=numpy.int64)
    except KeyError as error:
        raise ConfigError(
            f"seq_ordering {ordering!r}: segmentsInfo has no 'nframes' for segment {error.args[0]!r}") from None


def pass_order(num_segments: int, ordering: str, seed: int, corpus_pass: int,
               lengths: Optional[numpy.ndarray]) -> numpy.ndarray:
    """Indices of one pass over the corpus in ``ordering`` (see the module docstring)."""
    rng = numpy.random.default_rng([seed, corpus_pass])
    if ordering == "default":
        return numpy.arange(num_segments)
    if ordering == "random":
        return rng.permutation(num_segments)
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


def epoch_order(num_segments: int, config: Config, epoch: int, lengths: Optional[numpy.ndarray]) -> numpy.ndarray:
    """Indices of the segments of ``epoch`` (1-based), in order."""
    parts = config.partition_epoch
    corpus_pass, part = divmod(epoch - 1, parts)
    order = pass_order(num_segments, config.seq_ordering, config.seed, corpus_pass, lengths)
    bounds = numpy.linspace(0, len(order), parts + 1).round().astype(int)
    return order[bounds[part]:bounds[part + 1]]


def make_schedule(segment_list: Sequence[str], segments_info: Optional[Dict[str, dict]], config: Config):
    """The :class:`~sprintiface.training.schedule.EpochSchedule` of ``segment_list`` under ``config``.

    The config is checked here, at the call, so that a bad key stops RASR
    before the first segment; iterating the schedule only yields.
    """
    from sprintiface.training.schedule import EpochSchedule

    names = list(segment_list)
    lengths = None
    if config.seq_ordering.startswith(("sorted", "laplace")):
        lengths = _lengths(names, segments_info, config.seq_ordering)
    return EpochSchedule(names, config, lambda cfg, epoch: epoch_order(len(names), cfg, epoch, lengths))
