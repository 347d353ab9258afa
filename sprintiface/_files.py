"""Writing files that are complete or absent."""
from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb"):
    """Open a temporary file next to ``path``; rename it to ``path`` only when
    the block finishes without an exception (otherwise it is removed)."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def temporary_path_for(path: str) -> str:
    """A fresh temporary name next to ``path`` (for writers that open by name, like h5py)."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(handle)
    return temporary
