"""Class priors p(s) for hybrid scoring, in the formats ASR setups have.

Formats, told apart by content (not only by extension):

- ``.npy``: a 1-D numpy array;
- RASR XML: ``<vector-f32 size="N"> v1 v2 ... </vector-f32>`` (optionally
  behind an ``<?xml ...?>`` header), values separated by white space;
- text: RETURNN's ``load_txt_vector`` format, values separated by any white
  space (one per line is usual).

Values are in +log space (log p(s), RETURNN's and RASR's convention) unless
``space="prob"``. Everything returned is +log space, float32, shape (C,).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable, Optional

import numpy

from sprintiface.errors import PriorError

if TYPE_CHECKING:
    import numpy.typing
    from sprintiface.engine import OnnxEngine

# Patterns, not compiled at import: a job without a prior file (or with a text one) never uses
# them (re caches what it compiles).
_XML_VECTOR = r"<vector-f(?:32|64)\b([^>]*)>(.*?)</vector-f(?:32|64)\s*>"
_XML_SIZE = r"""size\s*=\s*["'](\d+)["']"""


def _read_values(path: str) -> numpy.ndarray:
    values: Optional[numpy.ndarray] = None
    try:
        with open(path, "rb") as file:
            head = file.read(6)
            file.seek(0)
            if head == b"\x93NUMPY":
                values = numpy.asarray(numpy.load(file, allow_pickle=False))
            else:
                text = file.read().decode("utf-8")
    except FileNotFoundError:
        raise PriorError(f"prior file {path!r} does not exist") from None
    except IsADirectoryError:
        raise PriorError(f"prior file {path!r} is a directory, expected a file") from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise PriorError(f"prior file {path!r} cannot be read: {error}") from None
    if values is not None:
        if values.dtype.kind not in "fiu":  # complex, strings, booleans: never converted silently
            raise PriorError(f"prior file {path!r}: expected real numbers, got a .npy of dtype {values.dtype}")
        return values
    stripped = text.lstrip()
    if stripped.startswith("<"):
        match = re.search(_XML_VECTOR, text, re.DOTALL)
        if match is None:
            raise PriorError(f"prior file {path!r}: XML without a <vector-f32 size=\"N\"> element")
        body = match.group(2)
        values = _parse_numbers(body, path)
        size = re.search(_XML_SIZE, match.group(1))
        if size is not None and int(size.group(1)) != values.size:
            raise PriorError(
                f"prior file {path!r}: <vector-f32 size=\"{size.group(1)}\"> holds {values.size} values")
        return values
    return _parse_numbers(text, path)


def _parse_numbers(text: str, path: str) -> numpy.ndarray:
    words = text.split()
    try:
        return numpy.array([float(word) for word in words], dtype=numpy.float64)
    except ValueError:
        bad = next(word for word in words if not _is_number(word))
        raise PriorError(f"prior file {path!r}: expected numbers separated by white space, got {bad!r}") from None


def _is_number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


def load_prior(path: str, space: str = "log", num_classes: Optional[int] = None) -> numpy.ndarray:
    """Read the prior at ``path``: float32 (C,) in +log space.

    ``space``: ``"log"`` if the file holds log p(s), ``"prob"`` if it holds p(s).
    ``num_classes``: when given, the prior must have exactly that many values.
    """
    if space not in ("log", "prob"):
        raise PriorError(f"prior space: expected 'log' or 'prob', got {space!r}")
    values = _read_values(path)
    if values.ndim != 1:
        raise PriorError(f"prior file {path!r}: expected a vector, got an array of shape {values.shape}")
    if values.size == 0:
        raise PriorError(f"prior file {path!r} holds no values")
    if num_classes is not None and values.size != num_classes:
        raise PriorError(
            f"prior file {path!r} has {values.size} values, but the model has {num_classes} classes (output_dim)")
    values = values.astype(numpy.float64)
    if not numpy.all(numpy.isfinite(values)):
        index = int(numpy.flatnonzero(~numpy.isfinite(values))[0])
        raise PriorError(f"prior file {path!r}: value {index} is {values[index]}, expected a finite number")
    if space == "prob":
        if numpy.any(values <= 0) or numpy.any(values > 1):
            index = int(numpy.flatnonzero((values <= 0) | (values > 1))[0])
            raise PriorError(
                f"prior file {path!r} (prior_space prob): value {index} is {values[index]}, expected 0 < p <= 1")
        values = numpy.log(values)
    elif numpy.any(values > 1e-4):
        index = int(numpy.flatnonzero(values > 1e-4)[0])
        raise PriorError(
            f"prior file {path!r} (prior_space log): value {index} is {values[index]}, but log p(s) <= 0; "
            f"if the file holds probabilities, set prior_space:prob")
    return values.astype(numpy.float32)


def save_prior(path: str, log_prior: numpy.ndarray) -> None:
    """Write ``log_prior`` (+log space, (C,)) in the format the extension names:
    ``.npy``, ``.xml`` (RASR) or anything else (RETURNN text, one value per line).

    Written to a temporary name and renamed, so the file is complete or absent.
    """
    from sprintiface._files import atomic_write

    values = numpy.asarray(log_prior, dtype=numpy.float32).reshape(-1)
    if path.endswith(".npy"):
        with atomic_write(path, "wb") as file:
            numpy.save(file, values)
    elif path.endswith(".xml"):
        body = " ".join(repr(float(v)) for v in values)
        with atomic_write(path, "w") as file:
            file.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<vector-f32 size="{values.size}">\n{body}\n'
                       f'</vector-f32>\n')
    else:
        with atomic_write(path, "w") as file:
            file.write("".join(f"{float(v)!r}\n" for v in values))


def estimate_prior(engine: OnnxEngine, segments: Iterable[numpy.typing.NDArray[numpy.float32]],
                   progress: Optional[Callable[[], None]] = None) -> numpy.typing.NDArray[numpy.float32]:
    """log p(s) as the mean of the model's posteriors over all frames of ``segments``
    (an iterable of float32 (T, F) arrays), streaming: one segment in memory at a time.
    The posteriors come from the same -log transform the scorer applies
    (sprintiface.scores). Returns float32 (C,), +log space."""
    from sprintiface.scores import model_posteriors

    total: Optional[numpy.typing.NDArray[numpy.float64]] = None
    frames = 0
    for features in segments:
        posteriors = model_posteriors(engine, features)
        sums = posteriors.sum(axis=0, dtype=numpy.float64)
        total = sums if total is None else total + sums
        frames += posteriors.shape[0]
        if progress is not None:
            progress()
    if total is None or not frames:
        raise PriorError("estimate_prior: the feature set holds no frames")
    prior = numpy.maximum(total / frames, numpy.finfo(numpy.float32).tiny)
    log_prior: numpy.typing.NDArray[numpy.float32] = numpy.log(prior / prior.sum()).astype(numpy.float32)
    return log_prior
