"""The trainer's fault table, each fault in a process of its own (tests/rasr_trainer_job.py):
disk full, signals, a job without exit(), bad dump_file paths, bad config files.

What must hold for each: no crash (a Python traceback and returncode 1, or the
signal that was sent), nothing under dump_file that looks complete, no
temporary left that the library could see, and the next run cleans up after a
killed one.
"""
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy
import pytest

h5py = pytest.importorskip("h5py")

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rasr_trainer_job.py")
TIMEOUT = 60


def run_job(config, *options, cwd=None):
    return subprocess.run([sys.executable, JOB, config, *map(str, options)], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=cwd)


def leftovers(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def read_tags(path):
    with h5py.File(path, "r") as file:
        return [tag.decode() for tag in file["seqTags"][...]], int(file.attrs["numSeqs"])


@pytest.mark.parametrize("queue_size", [0, 4])
@pytest.mark.parametrize("when", ["at a feed", "at exit"])
def test_disk_full_by_a_file_size_limit_is_a_trainer_error_not_a_crash(tmp_path, queue_size, when):
    dump = tmp_path / "dump.hdf"
    # 300 frames x 40 dims x 4 bytes = 48 kB a segment. At a feed: the limit is hit after ~20 of 60
    # segments. At exit: 3 segments stay in libhdf5's cache until exit() closes the file (0.1 crashed there).
    segments, limit = (60, 1_000_000) if when == "at a feed" else (3, 60_000)
    result = run_job(f"action:train,dump_file:{dump},queue_size:{queue_size}", "--segments", segments,
                     "--file-size-limit", limit)
    assert result.returncode == 1, result.stderr  # a Python traceback, not a signal (a crash would be -11)
    assert "Segmentation fault" not in result.stderr and "Fatal Python error" not in result.stderr
    assert re.search(r"sprintiface.errors.TrainerError: dump_file '.*dump.hdf': a write failed "
                     r"(at|before|while closing).*: File too large \(errno 27\)", result.stderr), result.stderr
    fed = [line for line in result.stdout.splitlines() if line.startswith("fed ")]
    if when == "at a feed":
        assert 10 < len(fed) < 60  # at the call whose write failed (queued: the next call)
    else:
        assert len(fed) == 3 and "sprintiface.exit()" in result.stderr and "while closing the file" in result.stderr
    assert os.listdir(tmp_path) == []  # no dump, no .partial, no temporary


def _unshare_available():
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_available(), reason="needs unshare with user and mount namespaces for a tmpfs")
def test_disk_full_on_a_tiny_tmpfs(tmp_path):
    # A 1 MiB tmpfs in a private mount namespace: ENOSPC from the filesystem itself
    mount = tmp_path / "small"
    mount.mkdir()
    script = ('mount -t tmpfs -o size=1m tmpfs "$1" || exit 99; shift; "$@"; code=$?; '
              'echo "listing:$(ls -A "$0")"; exit $code')
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(mount), str(mount),
         sys.executable, JOB, f"action:train,dump_file:{mount}/dump.hdf,queue_size:0", "--segments", "60"],
        capture_output=True, text=True, timeout=TIMEOUT)
    if result.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    assert result.returncode == 1, result.stderr
    assert "sprintiface.errors.TrainerError: dump_file" in result.stderr
    assert "No space left on device (errno 28)" in result.stderr
    assert result.stdout.splitlines()[-1] == "listing:"  # nothing left in the full filesystem


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_dump_leaves_nothing_complete_and_the_next_run_cleans_up(tmp_path, signal_number):
    dump = tmp_path / "dump.hdf"
    config = f"action:train,dump_file:{dump}"
    job = subprocess.Popen([sys.executable, JOB, config, "--end", "wait", "--ready-after", "5"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in job.stdout:
            if line.strip() == "ready":
                break
        job.send_signal(signal_number)
        job.wait(timeout=TIMEOUT)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        job.stdout.close()
        job.stderr.close()
    # No handler is installed: the default action ends the process at once, no atexit.
    assert job.returncode == -signal_number
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and stale[0].startswith("dump.hdf.") and f".{job.pid}." in stale[0]
    assert sorted(os.listdir(tmp_path)) == stale  # no dump.hdf, no dump.hdf.partial
    # The next run of the job removes the killed one's temporary and writes the dump.
    result = run_job(config, "--segments", 3)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["dump.hdf"]
    assert read_tags(dump) == ([f"corpus/s{i}" for i in range(3)], 3)
    assert f"removed {tmp_path / stale[0]}, left by a writer that was killed" in result.stderr


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    dump = tmp_path / "dump.hdf"
    job = subprocess.Popen([sys.executable, JOB, f"action:train,dump_file:{dump}", "--end", "wait"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in job.stdout:
            if line.strip() == "ready":
                break
        running = leftovers(tmp_path)
        other = run_job(f"action:train,dump_file:{dump}", "--segments", 2)
        assert other.returncode == 0, other.stderr
        assert leftovers(tmp_path) == running and len(running) == 1
    finally:
        job.kill()
        job.wait()
        job.stdout.close()


def test_a_job_without_exit_leaves_a_partial_dump_never_the_final_name(tmp_path):
    dump = tmp_path / "dump.hdf"
    for queue_size in (0, 4):
        result = run_job(f"action:train,dump_file:{dump},queue_size:{queue_size}", "--segments", 5, "--end", "no-exit")
        assert result.returncode == 0, result.stderr
        assert sorted(os.listdir(tmp_path)) == ["dump.hdf.partial"]
        assert read_tags(f"{dump}.partial") == ([f"corpus/s{i}" for i in range(5)], 5)
        assert f"the 5 segments written are in {dump}.partial, {dump} was not written" in result.stderr
    # A complete run writes dump.hdf and removes the incomplete one's .partial.
    result = run_job(f"action:train,dump_file:{dump}", "--segments", 2)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["dump.hdf"]
    with h5py.File(dump, "r") as file:
        numpy.testing.assert_array_equal(file["inputs"][300:], numpy.ones((300, 40)))


@pytest.mark.parametrize("make_path, message", [
    (lambda d: d, "is a directory; expected the path of the HDF5 file to write"),
    (lambda d: d / "missing" / "dump.hdf", "the directory '.*missing' of '.*' does not exist"),
    (lambda d: "/proc/sprintiface-dump.hdf", "cannot create a file next to '/proc/sprintiface-dump.hdf'"),
])
def test_a_bad_dump_file_is_a_config_error_at_init(tmp_path, make_path, message):
    result = run_job(f"action:train,dump_file:{make_path(tmp_path)}", "--segments", 3)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("sprintiface.errors.ConfigError: config key 'dump_file': ")
    assert re.search(message, error), error
    assert "sprintiface.init(" in result.stderr and result.stdout == ""  # at init, before any segment
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("content, message", [
    (None, r"config key 'configfile': no such file '.*missing.toml'"),
    ('trainer = "dump"\nnot toml at all', "is not valid TOML"),
    ('trainer = 3\n', r"config key 'trainer' \(in .*bad.toml\): expected a string, got int"),
    ('seq_ordering = "shuffled"\n', r"config key 'seq_ordering' \(in .*bad.toml\): expected default, random"),
    ('queue_size = -2\n', r"config key 'queue_size' \(in .*bad.toml\): expected a value >= 0"),
])
def test_a_bad_configfile_is_a_config_error_at_init(tmp_path, content, message):
    path = tmp_path / ("missing.toml" if content is None else "bad.toml")
    if content is not None:
        path.write_text(content)
    result = run_job(f"action:train,configfile:{path},dump_file:{tmp_path}/dump.hdf", "--segments", 2)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("sprintiface.errors.ConfigError: ")
    assert re.search(message, error), error
    assert result.stdout == ""
    assert leftovers(tmp_path) == [] and not (tmp_path / "dump.hdf").exists()
