"""Exception types of sprintiface: one per kind of failure.

Every message names what was expected and what came. RASR prints the
traceback of any exception raised into it and stops the job, so these are
raised at the boundary where the bad value enters, before anything is
computed with it.
"""


class SprintifaceError(Exception):
    """Base of every error sprintiface raises on purpose."""


class ConfigError(SprintifaceError, ValueError):
    """A pymod-config / TOML key is unknown, has a bad value, or names a missing file."""


class ModelError(SprintifaceError):
    """The ONNX model cannot serve as asked: unreadable, ambiguous inputs or
    outputs, dimensions that disagree with RASR's, a failing run."""


class PriorError(SprintifaceError, ValueError):
    """A prior file cannot be read, has the wrong length or values out of range."""


class FeatureError(SprintifaceError, ValueError):
    """A frame or feature matrix from RASR has the wrong shape, dtype or time index."""


class ProtocolError(SprintifaceError, RuntimeError):
    """A call came out of the order the RASR protocol defines (get_scores before
    compute, a reset count that disagrees, finishError without feedInput, ...)."""


class ScoreError(SprintifaceError, ArithmeticError):
    """The model produced scores that are not finite (NaN or infinity)."""


class TrainerError(SprintifaceError, RuntimeError):
    """The trainer failed; raised at RASR's next call, chained to the original error."""
