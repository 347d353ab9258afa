"""The ``sprintiface`` logger, and ``log_level`` applied on every path RASR enters.

RASR embeds Python without configuring logging, so the first config that
comes (feature scorer, trainer or segment ordering) sets the logger's level
and, when the host set up no handler, adds one that writes to stderr, which
RASR's log collects. Lines read ``sprintiface: ...``; warnings and errors name
their level (``sprintiface WARNING: ...``), so that they stand out in RASR's log.

RASR's embedded Python never imports :mod:`logging`, and neither does sprintiface
until something else in the process has: until then :data:`logger` writes its
lines to stderr itself, in the same format (importing logging and building its
handler cost every cold job ~10 ms of CPU and 0.7 MiB). Once logging is imported
(a host that configures it, pytest, PyTorch), every call goes to
``logging.getLogger("sprintiface")``, with ``log_level`` and the stderr handler
applied to it then, so the host's handlers and levels rule as usual.

What each level shows is stated once, here: the scorer and the trainer log their
per-segment lines at the levels below, and the ``log_level`` key's help (and so
docs/configuration.md) is made from the same constants.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import logging

    from sprintiface.config import Config

#: logging's numeric levels (the same numbers, without importing logging).
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_LEVEL_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR", CRITICAL: "CRITICAL"}

#: Level of the feature scorer's line per scored buffer: a line costs more than a small
#: buffer's whole run, so it is debug (the job's summary comes at exit(), at info).
SCORER_SEGMENT_LEVEL = DEBUG
#: Level of the trainer's line per segment fed (a segment is trained for far longer than
#: a line takes).
TRAINER_SEGMENT_LEVEL = INFO


def _per_segment(level: int) -> str:
    parts = []
    if level <= SCORER_SEGMENT_LEVEL:
        parts.append("a line per buffer from the feature scorer")
    if level <= TRAINER_SEGMENT_LEVEL:
        parts.append("a line per segment from the trainer")
    return " and ".join(parts)


#: The values of ``log_level`` and what each shows.
LEVELS: dict[str, str] = {
    "debug": "everything, " + _per_segment(DEBUG),
    "info": "the scorer's start and summary (frames, compute time, RTF), the trainer's epochs"
            + (", " + _per_segment(INFO) if _per_segment(INFO) else ""),
    "warning": "only problems",
    "error": "only errors",
}


def log_level_help() -> str:
    """The ``log_level`` key's meaning, made from :data:`LEVELS`."""
    return "Level of the 'sprintiface' logger: " + "; ".join(
        f"{name}: {meaning}" for name, meaning in LEVELS.items()) + "."


def format_line(level: int, message: str) -> str:
    """A log line as RASR's log shows it: ``sprintiface: message`` below WARNING,
    ``sprintiface WARNING: message`` (the level's name) from it on."""
    if level >= WARNING:
        return f"sprintiface {_LEVEL_NAMES.get(level, f'Level {level}')}: {message}"
    return f"sprintiface: {message}"


class SprintifaceLogger:
    """The ``sprintiface`` logger: logging's calls (``debug`` ... ``exception``, ``log``,
    ``isEnabledFor``), with or without :mod:`logging` in the process (see the module's
    docstring). Messages are %-formatted with their arguments, as logging does."""

    def __init__(self) -> None:
        #: The level while logging is not imported (an unconfigured logger shows WARNING up).
        self._level = WARNING
        #: log_level still to apply to logging's logger once logging is imported.
        self._pending: Optional[int] = None
        #: logging's logger, once logging is imported (it then stays: looked up once, not per
        #: call, since the scorer asks isEnabledFor per buffer).
        self._delegate: Optional[logging.Logger] = None

    def _logging_logger(self) -> Optional[logging.Logger]:
        if self._delegate is not None:
            return self._delegate
        if "logging" not in sys.modules:
            return None
        import logging

        logger = self._delegate = logging.getLogger("sprintiface")
        if self._pending is not None:
            level, self._pending = self._pending, None
            _configure_logging_logger(logger, level)
        return logger

    def configure(self, level: int) -> None:
        """Apply a level (``log_level``): to logging's logger when logging is imported,
        else here, and to logging's logger as soon as it is."""
        self._level = level
        logger = self._logging_logger()
        if logger is None:
            self._pending = level
        else:
            _configure_logging_logger(logger, level)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        logger = self._logging_logger()
        return logger.isEnabledFor(level) if logger is not None else level >= self._level

    def log(self, level: int, message: str, *args: Any, exc_info: bool = False) -> None:
        logger = self._logging_logger()
        if logger is not None:
            logger.log(level, message, *args, exc_info=exc_info)
            return
        if level < self._level:
            return
        text = message % args if args else message
        if exc_info and sys.exc_info()[0] is not None:
            import traceback

            text = f"{text}\n{traceback.format_exc().rstrip()}"
        sys.stderr.write(format_line(level, text) + "\n")
        sys.stderr.flush()

    def debug(self, message: str, *args: Any) -> None:
        self.log(DEBUG, message, *args)

    def info(self, message: str, *args: Any) -> None:
        self.log(INFO, message, *args)

    def warning(self, message: str, *args: Any) -> None:
        self.log(WARNING, message, *args)

    def error(self, message: str, *args: Any) -> None:
        self.log(ERROR, message, *args)

    def exception(self, message: str, *args: Any) -> None:
        """An ERROR line with the traceback of the exception being handled."""
        self.log(ERROR, message, *args, exc_info=True)


logger = SprintifaceLogger()


def _configure_logging_logger(logger: logging.Logger, level: int) -> None:
    """logging's ``sprintiface`` logger at ``level``, with a stderr handler writing
    :func:`format_line`'s lines when the host set up none."""
    import logging

    class LevelNamingFormatter(logging.Formatter):
        def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
            return format_line(record.levelno, record.getMessage())

    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(LevelNamingFormatter())
        logger.addHandler(handler)


def configure_logging(config: Config) -> None:
    """Apply ``config.log_level``; add a stderr handler when the host (RASR) set none up."""
    logger.configure({name.lower(): level for level, name in _LEVEL_NAMES.items()}[config.log_level])
