"""PythonSegmentOrdering: which segments RASR processes, in which order, epoch by epoch.

RASR calls ``getSegmentList(corpusName, segmentList, segmentsInfo, config)``
(``python-segment-order = true``) and processes every name as soon as the
returned iterator yields it, so one generator spanning epochs
``start_epoch .. num_epochs`` drives a whole training. RASR may call it more
than once (once just to count), so it is deterministic and changes nothing:
the only state it leaves is which epoch the segment it yielded last belongs to
(:func:`sprintiface.training.announce_epoch`), which the trainer reads when that
segment arrives.

Epoch ``e`` with ``partition_epoch = N`` is part ``(e - 1) % N`` of the
ordering of pass ``(e - 1) // N`` over the corpus, so N consecutive epochs see
every segment exactly once; random orderings are seeded by ``seed`` and the
pass.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Iterator, List, Optional, Sequence

import numpy

from sprintiface.config import Config, load_config
from sprintiface.errors import ConfigError

_DONE_MARKER = re.compile(r"^epoch\.(\d+)\.done$")


def last_finished_epoch(checkpoint_dir: Optional[str]) -> int:
    """Highest epoch with an ``epoch.NNN.done`` marker in ``checkpoint_dir`` (0 for none)."""
    if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
        return 0
    epochs = [int(m.group(1)) for m in map(_DONE_MARKER.match, os.listdir(checkpoint_dir)) if m]
    return max(epochs, default=0)


def first_epoch(config: Config) -> int:
    """``start_epoch``, else the epoch after the last finished one in ``checkpoint_dir``, else 1."""
    if config.start_epoch is not None:
        return config.start_epoch
    return last_finished_epoch(config.checkpoint_dir) + 1


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


def epoch_order(num_segments: int, ordering: str, seed: int, corpus_pass: int,
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


def epoch_segments(names: Sequence[str], config: Config, epoch: int,
                   lengths: Optional[numpy.ndarray]) -> List[str]:
    """The segment names of ``epoch`` (1-based), in order."""
    parts = config.partition_epoch
    corpus_pass, part = divmod(epoch - 1, parts)
    order = epoch_order(len(names), config.seq_ordering, config.seed, corpus_pass, lengths)
    bounds = numpy.linspace(0, len(order), parts + 1).round().astype(int)
    return [names[i] for i in order[bounds[part]:bounds[part + 1]]]


def get_segment_list(corpus_name: str, segment_list: Sequence[str],
                     segments_info: Optional[Dict[str, dict]] = None, config: Optional[str] = None
                     ) -> Iterator[str]:
    """Segment names for epochs ``first_epoch .. num_epochs``, as one generator.

    The config is checked here, at the call, so that a bad key stops RASR
    before the first segment; the generator itself only yields.
    """
    from sprintiface import training

    parsed = load_config(config)
    training.last_config = parsed
    names = list(segment_list)
    lengths = None
    if parsed.seq_ordering.startswith(("sorted", "laplace")):
        lengths = _lengths(names, segments_info, parsed.seq_ordering)
    start = first_epoch(parsed)
    return _generate(names, parsed, start, lengths)


def _generate(names, config: Config, start: int, lengths) -> Iterator[str]:
    from sprintiface import training

    for epoch in range(start, config.num_epochs + 1):
        for name in epoch_segments(names, config, epoch, lengths):
            training.announce_epoch(epoch)
            yield name
