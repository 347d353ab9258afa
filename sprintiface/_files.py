"""Writing files that are complete or absent.

Everything sprintiface writes goes to a temporary file next to its final
name and is renamed only when complete. A temporary is named
``<final name>.<host>.<pid>.<random>.tmp`` and held under an exclusive
``flock`` by the process writing it, so that a later run can tell the
leftovers of a killed writer (SIGKILL, SIGTERM) from a file another live
process is still writing: :func:`remove_stale_temporaries` removes those of
this host whose process is gone and whose lock is free.

Scratch directories (:func:`scratch_directory`, ``.<name>.<host>.<pid>.<random>.scratch``)
follow the same rule: locked by their live owner, removed by the next run
once their owner is dead (:func:`remove_stale_scratch`). :func:`exclusive_lock`
serialises writers of one final name through a lock file that the holder
removes when it is done.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from typing import IO, Any, Callable

#: Part of every temporary's name; a host's cleanup only touches its own. The node name is
#: what socket.gethostname() returns on POSIX; importing socket would cost a cold job ~10 ms of CPU.
_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", os.uname().nodename) or "localhost"

# tempfile and shutil are not imported: with what they import (random, bz2, lzma, ...) they
# cost a cold RASR job ~9 ms of CPU for the three things below.


def temp_folder() -> str:
    """The temp folder as :func:`tempfile.gettempdir` finds it on POSIX: ``$TMPDIR``,
    ``$TEMP`` or ``$TMP``, else the first of /tmp, /var/tmp, /usr/tmp that is a writable
    folder, else the working directory."""
    candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")] + ["/tmp", "/var/tmp", "/usr/tmp"]
    for candidate in candidates:
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return os.path.abspath(candidate)
    return os.getcwd()


def _create_fresh(directory: str, prefix: str, suffix: str, create: Callable[[str], Any]) -> tuple[Any, str]:
    """``(create(path), path)`` for the first fresh ``<directory>/<prefix><12 random hex
    digits><suffix>`` that ``create`` makes without FileExistsError (O_EXCL, mkdir)."""
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return create(path), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name {prefix}*{suffix} in {directory!r}")


def remove_tree(path: str) -> None:
    """Remove ``path`` and what is under it, ignoring errors (a folder of sprintiface's own:
    symbolic links in it are removed, not followed)."""
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    remove_tree(entry.path)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
    except NotADirectoryError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.rmdir(path)


def create_temporary(path: str) -> tuple[int, str]:
    """Create and lock a fresh temporary file next to ``path``: ``(fd, temporary path)``.

    The file is mode 0644 (results are meant to be shared) and locked with
    ``flock(LOCK_EX)`` for as long as ``fd`` is open. Raises OSError when the
    directory is missing or not writable.
    """
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f"{os.path.basename(path)}.{_HOST}.{os.getpid()}."
    handle, temporary = _create_fresh(
        directory, prefix, ".tmp", lambda name: os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    try:
        os.fchmod(handle, 0o644)
        _lock(handle)
    except BaseException:
        os.close(handle)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return handle, temporary


def _lock(handle: int) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:  # a filesystem without locks: the pid in the name still tells
        if isinstance(error, BlockingIOError):
            raise
        return


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _writer_alive(handle: int, pid: int) -> bool:
    """Whether the process that made the temporary open as ``handle`` may still write it.

    Its lock (held while it writes, released when it dies however it dies)
    and its pid must both say it is gone: the pid covers the moment between
    creating and locking the file, the lock covers a pid of another pid
    namespace (containers sharing a host name) and filesystems that lock.
    """
    if _process_alive(pid):
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:  # no locks on this filesystem: the pid has spoken
        return False


def _remove_stale(directory: str, pattern: re.Pattern[str], remove: Callable[[str], None]) -> list[str]:
    """Remove (with ``remove``) the entries of ``directory`` whose name matches ``pattern``
    (groups ``host`` and ``pid``), carry this host's name and whose writer is dead."""
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or match.group("host") != _HOST or int(match.group("pid")) == os.getpid():
            continue
        candidate = os.path.join(directory, name)
        try:
            handle = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if not _writer_alive(handle, int(match.group("pid"))):
                remove(candidate)
                removed.append(candidate)
        except OSError:
            pass
        finally:
            os.close(handle)
    return removed


def remove_stale_temporaries(path: str) -> list[str]:
    """Remove the temporaries of ``path`` that a dead process of this host left; returns them.

    A temporary is stale when it carries this host's name, the process of its
    pid is gone and no process holds its lock (its writer was killed: locks end
    with the process). Temporaries of other hosts (a shared filesystem) and of
    live writers are left alone.
    """
    directory = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(os.path.basename(path)) + r"\.(?P<host>.+)\.(?P<pid>\d+)\.[^.]+\.tmp")
    return _remove_stale(directory, pattern, os.unlink)


def _scratch_pattern(path: str) -> re.Pattern[str]:
    return re.compile(r"\." + re.escape(os.path.basename(path)) + r"\.(?P<host>.+)\.(?P<pid>\d+)\.[^.]+\.scratch")


def remove_stale_scratch(path: str) -> list[str]:
    """Remove the scratch directories of ``path`` (see :func:`scratch_directory`) that a
    dead process of this host left, with what is in them; returns them. Those of live
    processes and of other hosts are left alone."""
    directory = os.path.dirname(os.path.abspath(path))

    return _remove_stale(directory, _scratch_pattern(path), remove_tree)


@contextlib.contextmanager
def scratch_directory(path: str) -> Iterator[str]:
    """A fresh directory ``.<name of path>.<host>.<pid>.<random>.scratch`` next to ``path``
    (mode 0700), locked by this process while the block runs and removed with its
    contents at its end. One that a killed process left is removed by the next
    :func:`remove_stale_scratch` of the same ``path`` (its lock then is free)."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}.{_HOST}.{os.getpid()}."
    _, scratch = _create_fresh(directory, prefix, ".scratch", lambda name: os.mkdir(name, 0o700))
    try:
        handle = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    except BaseException:
        remove_tree(scratch)
        raise
    try:
        _lock(handle)
        yield scratch
    finally:
        remove_tree(scratch)
        os.close(handle)


@contextlib.contextmanager
def exclusive_lock(lock_path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``lock_path`` while the block runs (waiting
    for another holder), and remove the file at the end.

    Removing a lock file is safe because a process that got the lock checks that
    the name still names the file it locked, and tries again when it does not (the
    holder before it removed it). A holder killed in the block leaves the file
    behind, unlocked and harmless: the next holder removes it. On a filesystem
    without locks the block runs unserialised.
    """
    while True:
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if isinstance(error, InterruptedError):
                os.close(handle)
                continue
            break  # no locks here: go on without
        try:
            named = os.stat(lock_path, follow_symlinks=False)
        except FileNotFoundError:
            named = None
        held = os.fstat(handle)
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(handle)  # the file we locked was removed by the holder before us: again
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(handle)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; rename it to ``path`` only when
    the block finishes without an exception (otherwise it is removed)."""
    handle, temporary = create_temporary(path)
    try:
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
