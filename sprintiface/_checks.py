"""Checks of values that come from a host (RASR, a config, the command line), shared by the
modules that receive them.

One rule is written here once: a count, a dimension or a time is an integer and never
a bool. ``True`` is an ``int`` in Python (and numpy bools before numpy 2.3 have an
``__index__``), so a plain ``int(value)`` would take a
flag for the number 1.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy

from sprintiface.errors import ProtocolError


def checked_int(value: object, name: str, *, where: str = "", minimum: Optional[int] = None,
                error: Callable[[str], Exception] = ProtocolError) -> int:
    """``value`` as a Python ``int``: an ``int`` or a numpy integer, not a bool (nor a
    float, a string or None), and at least ``minimum`` when that is given.

    Anything else raises ``error`` (ProtocolError unless told) with the message
    ``"<where>: expected <name> to be an int [>= minimum], got <type> <value>"``.
    """
    bound = "" if minimum is None else f" >= {minimum}"

    def refuse() -> Exception:
        prefix = f"{where}: " if where else ""
        return error(f"{prefix}expected {name} to be an int{bound}, got {type(value).__name__} {value!r}")

    # bool is a subclass of int: refused first.
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, numpy.integer)):
        raise refuse()
    number = int(value)
    if minimum is not None and number < minimum:
        raise refuse()
    return number
