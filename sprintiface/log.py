"""The ``sprintiface`` logger, and ``log_level`` applied on every path RASR enters.

RASR embeds Python without configuring logging, so the first config that
comes (feature scorer, trainer or segment ordering) sets the logger's level
and, when the host set up no handler, adds one that writes to stderr, which
RASR's log collects. Lines read ``sprintiface: ...``; warnings and errors name
their level (``sprintiface WARNING: ...``), so that they stand out in RASR's log.

What each level shows is stated once, here: the scorer and the trainer log their
per-segment lines at the levels below, and the ``log_level`` key's help (and so
docs/configuration.md) is made from the same constants.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sprintiface.config import Config

logger = logging.getLogger("sprintiface")

#: Level of the feature scorer's line per scored buffer: a line costs more than a small
#: buffer's whole run, so it is debug (the job's summary comes at exit(), at info).
SCORER_SEGMENT_LEVEL = logging.DEBUG
#: Level of the trainer's line per segment fed (a segment is trained for far longer than
#: a line takes).
TRAINER_SEGMENT_LEVEL = logging.INFO


def _per_segment(level: int) -> str:
    parts = []
    if level <= SCORER_SEGMENT_LEVEL:
        parts.append("a line per buffer from the feature scorer")
    if level <= TRAINER_SEGMENT_LEVEL:
        parts.append("a line per segment from the trainer")
    return " and ".join(parts)


#: The values of ``log_level`` and what each shows.
LEVELS: dict[str, str] = {
    "debug": "everything, " + _per_segment(logging.DEBUG),
    "info": "the scorer's start and summary (frames, compute time, RTF), the trainer's epochs"
            + (", " + _per_segment(logging.INFO) if _per_segment(logging.INFO) else ""),
    "warning": "only problems",
    "error": "only errors",
}


def log_level_help() -> str:
    """The ``log_level`` key's meaning, made from :data:`LEVELS`."""
    return "Level of the 'sprintiface' logger: " + "; ".join(
        f"{name}: {meaning}" for name, meaning in LEVELS.items()) + "."


class _LevelNamingFormatter(logging.Formatter):
    """``sprintiface: message`` below WARNING, ``sprintiface WARNING: message`` from it on."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        if record.levelno >= logging.WARNING:
            return f"sprintiface {record.levelname}: {record.getMessage()}"
        return f"sprintiface: {record.getMessage()}"


def configure_logging(config: Config) -> None:
    """Apply ``config.log_level``; add a stderr handler when the host (RASR) set none up."""
    logger.setLevel(config.log_level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_LevelNamingFormatter())
        logger.addHandler(handler)
