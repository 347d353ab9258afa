"""The ``sprintiface`` logger, and ``log_level`` applied on every path RASR enters.

RASR embeds Python without configuring logging, so the first config that
comes (feature scorer, trainer or segment ordering) sets the logger's level
and, when the host set up no handler, adds one that writes to stderr, which
RASR's log collects.
"""
from __future__ import annotations

import logging

logger = logging.getLogger("sprintiface")


def configure_logging(config) -> None:
    """Apply ``config.log_level``; add a stderr handler when the host (RASR) set none up."""
    logger.setLevel(config.log_level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("sprintiface: %(message)s"))
        logger.addHandler(handler)
