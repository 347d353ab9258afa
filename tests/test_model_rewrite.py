"""A model file rewritten in place under running jobs (cp, onnx.save, a torch export,
rsync --inplace): a job keeps its scores and lives, as a bare InferenceSession(path)
does, because sprintiface never maps nor keeps open a file that is not its own.

Each job is a real process (tests/rewrite_victim.py) so that a SIGBUS shows as its
signal exit; the new content is a different model of the same shape, so that a mix
of two models would show in the scores.
"""
import contextlib
import os
import shutil
import stat
import subprocess
import sys

import numpy
import onnxruntime
import pytest
from conftest import AWAY_FROM_SOURCE, bare_run, features, make_engine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_models import build_blstm, build_mlp, save_model

from sprintiface.cli import main
from sprintiface.engine import session_options

VICTIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rewrite_victim.py")
INPUT_DIM, OUTPUT_DIM = 12, 30


class Victim:
    """A scorer job in its own process, scoring the same features on request."""

    def __init__(self, tmp_path, config, x, name="victim"):
        numpy.save(tmp_path / f"{name}-x.npy", x)
        self.prefix = str(tmp_path / f"{name}-scores")
        env = dict(os.environ, SPRINTIFACE_CACHE_DIR=str(tmp_path / "cache"))
        self.process = subprocess.Popen(
            [sys.executable, VICTIM, config + ",log_level:warning", str(INPUT_DIM), str(OUTPUT_DIM),
             str(tmp_path / f"{name}-x.npy"), self.prefix],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.count = 0
        self._expect("ready")
        self.first = numpy.load(f"{self.prefix}0.npy")

    def _expect(self, line):
        got = self.process.stdout.readline().strip()
        if got != line:
            self.process.kill()
            _, err = self.process.communicate(timeout=60)
            raise AssertionError(f"the job said {got!r}, expected {line!r}; exit {self.process.returncode}; {err}")

    def score(self):
        """Scores of the next compute(): the job must still be alive to give them."""
        self.count += 1
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self._expect(f"scored {self.count}")
        return numpy.load(f"{self.prefix}{self.count}.npy")

    def files_in_use(self):
        """What the job maps and holds open (its /proc entries): real paths."""
        pid = self.process.pid
        with open(f"/proc/{pid}/maps", encoding="utf-8") as maps:
            mapped = {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
        opened = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                opened.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        return mapped, opened

    def close(self):
        _, err = self.process.communicate("", timeout=60)  # end of input: the job exits
        assert self.process.returncode == 0, f"the job ended with {self.process.returncode}: {err}"


def _same_size_in_place(path, new):
    size = os.path.getsize(path)
    with open(path, "r+b") as file:  # no truncation: same inode, same size, new bytes
        file.write((new + bytes(size))[:size])


def _truncate_and_write(path, new):
    with open(path, "wb") as file:  # what cp, onnx.save and torch.onnx.export do
        file.write(new)


def _copyfile(path, new):
    source = path + ".new"
    with open(source, "wb") as file:
        file.write(new)
    shutil.copyfile(source, path)
    os.unlink(source)


def _shorter(path, new):
    with open(path, "r+b") as file:
        file.write(new[:len(new) // 3])
        file.truncate()


def _longer(path, new):
    with open(path, "wb") as file:
        file.write(new + new)


REWRITES = {"same-size-in-place": _same_size_in_place, "truncate-and-write": _truncate_and_write,
            "copyfile": _copyfile, "shorter": _shorter, "longer": _longer}


def _models(tmp_path, form, builder=build_mlp):
    """``(path the job loads, bytes of another model of the same shape for that path, old model's copy)``."""
    old, new = builder(INPUT_DIM, OUTPUT_DIM, seed=1), builder(INPUT_DIM, OUTPUT_DIM, seed=2)
    keep = tmp_path / "keep"
    keep.mkdir()
    save_model(old, str(keep / "old.onnx"))
    save_model(new, str(keep / "new.onnx"))
    if form == "plain":
        shutil.copyfile(keep / "old.onnx", tmp_path / "am.onnx")
        return str(tmp_path / "am.onnx"), (keep / "new.onnx").read_bytes(), str(keep / "old.onnx")
    assert main(["prepare", str(keep / "old.onnx"), "-o", str(tmp_path / "am.onnx")]) == 0
    assert main(["prepare", str(keep / "new.onnx"), "-o", str(keep / "am.onnx")]) == 0
    return str(tmp_path / "am.onnx"), (keep / "am.onnx").read_bytes(), str(keep / "old.onnx")


@pytest.mark.parametrize("rewrite", sorted(REWRITES))
@pytest.mark.parametrize("share", ["false", "true"])
@pytest.mark.parametrize("form", ["plain", "prepared"])
def test_a_job_keeps_its_scores_when_its_model_is_rewritten(tmp_path, form, share, rewrite):
    path, new, old = _models(tmp_path, form)
    x = features(37, INPUT_DIM, seed=3)
    victim = Victim(tmp_path, f"onnx:{path},share_weights:{share}", x)
    try:
        numpy.testing.assert_allclose(victim.first, -numpy.log(bare_run(old, x)), rtol=2e-5, atol=2e-5)
        mapped, opened = victim.files_in_use()
        assert os.path.realpath(path) not in mapped and os.path.realpath(path) not in opened
        inode = os.stat(path).st_ino
        REWRITES[rewrite](path, new)
        assert os.stat(path).st_ino == inode  # in place, not a new file under the name
        numpy.testing.assert_array_equal(victim.score(), victim.first)
        # and again, after the job has run on whatever it holds
        numpy.testing.assert_array_equal(victim.score(), victim.first)
    finally:
        victim.close()


@pytest.mark.parametrize("share", [False, True])
def test_random_rewrites_under_a_running_job(tmp_path, share):
    """Hypothesis writes, truncates and extends the model file at random places while a
    job runs on it; every compute() gives the first run's scores, bit for bit."""
    path = str(tmp_path / "am.onnx")
    # hidden biases of over 1 KB: ONNX Runtime keeps them as they are (not packed)
    save_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (320, 320), seed=5), path)
    other = build_mlp(INPUT_DIM, OUTPUT_DIM, (320, 320), seed=6).SerializeToString()
    victim = Victim(tmp_path, f"onnx:{path},share_weights:{str(share).lower()}", features(23, INPUT_DIM, seed=4))
    try:
        @settings(max_examples=20, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(st.lists(st.tuples(st.sampled_from(["write", "other", "truncate", "extend"]),
                                  st.floats(0, 1), st.integers(1, 1 << 16)), min_size=1, max_size=4))
        def rewrite_and_score(steps):
            for kind, where, length in steps:
                size = os.path.getsize(path)
                offset = int(where * size)
                with open(path, "r+b") as file:
                    if kind == "write":
                        file.seek(offset)
                        file.write(os.urandom(length))
                    elif kind == "other":  # the other model's bytes at the same place
                        file.seek(offset)
                        file.write(other[offset:offset + length])
                    elif kind == "truncate":
                        file.truncate(offset)
                    else:
                        file.truncate(size + length)
            numpy.testing.assert_array_equal(victim.score(), victim.first)

        rewrite_and_score()
    finally:
        victim.close()


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("builder", [build_mlp, build_blstm])
def test_lean_load_path_matches_a_bare_session_bit_for_bit(tmp_path, write_model, builder, share, monkeypatch):
    """The fast path's twin: a bare InferenceSession(path) of the same file with the same
    session settings gives the same output, bit for bit (a logits head: nothing is cut)."""
    monkeypatch.setenv("SPRINTIFACE_CACHE_DIR", str(tmp_path / "cache"))
    path = write_model(builder(INPUT_DIM, OUTPUT_DIM, seed=7, output_kind="logits"))
    engine = make_engine(path, share_weights=share, output_kind="logits")
    options = session_options()
    if share:
        options.add_session_config_entry("session.disable_prepacking", "1")
    bare = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for num_frames in (1, 16, 53):
        x = features(num_frames, INPUT_DIM, seed=num_frames)
        feeds = {info.name: (x[None] if info.type == "tensor(float)" else
                             numpy.array([num_frames], dtype=numpy.int32)) for info in bare.get_inputs()}
        expected = bare.run([bare.get_outputs()[0].name], feeds)[0][0]
        numpy.testing.assert_array_equal(engine.forward(x), expected)


def test_shared_copy_is_content_addressed_read_only_and_used_by_each_job(tmp_path, write_model, monkeypatch):
    monkeypatch.setenv("SPRINTIFACE_CACHE_DIR", str(tmp_path / "cache"))
    path = write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=8), "am.onnx")
    first = make_engine(path, share_weights=True)
    copies = os.listdir(tmp_path / "cache")
    assert copies == [os.path.basename(first.weights_file)] and copies[0].endswith(".data")
    assert stat.S_IMODE(os.stat(first.weights_file).st_mode) == 0o444
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o700
    assert first.shared_weight_bytes > 0  # mapped from the copy
    # the same weights under another name: the same copy; other weights: another copy
    shutil.copyfile(path, tmp_path / "again.onnx")
    assert make_engine(str(tmp_path / "again.onnx"), share_weights=True).weights_file == first.weights_file
    save_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=9), path)
    second = make_engine(path, share_weights=True)
    assert second.weights_file != first.weights_file and len(os.listdir(tmp_path / "cache")) == 2
    # removing a copy under a running job is safe: its pages stay mapped
    x = features(5, INPUT_DIM)
    before = first.forward(x)
    os.unlink(first.weights_file)
    numpy.testing.assert_array_equal(first.forward(x), before)


def test_a_load_leaves_no_copy_behind_and_cleans_a_dead_ones(tmp_path, write_model):
    """The private copy of a load (share_weights:false) is gone once the session is made;
    one that a killed load left is removed by the next load."""
    from sprintiface.weight_store import private_root

    path = write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=10))
    root = private_root()
    before = set(os.listdir(root))
    code = ("import os, signal, sys\n"
            "import sprintiface.weight_store as weight_store\n"
            "real = weight_store.copy_privately\n"
            "def copy_and_die(weights, work):\n"
            "    real(weights, work)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "weight_store.copy_privately = copy_and_die\n"
            "from sprintiface.engine import OnnxEngine\n"
            f"OnnxEngine({path!r})\n")
    killed = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=AWAY_FROM_SOURCE)
    killed.communicate(timeout=120)
    assert killed.returncode == -9
    left = [name for name in set(os.listdir(root)) - before if f".{killed.pid}." in name]
    assert len(left) == 1 and left[0].endswith(".scratch") and os.listdir(os.path.join(root, left[0]))
    make_engine(path)
    assert not os.path.exists(os.path.join(root, left[0]))
    assert not [name for name in os.listdir(root) if f".{os.getpid()}." in name]  # this load's copy: gone


@pytest.mark.parametrize("share", ["false", "true"])
def test_a_models_own_data_file_rewritten_under_a_job(tmp_path, share):
    """A model saved with external data (torch's exporter does that past 2 GB): its data file
    is the user's too, and rewriting it under a job changes nothing for the job."""
    import onnx

    for name, seed in (("am", 1), ("other", 2)):
        onnx.save_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (320,), seed=seed), str(tmp_path / f"{name}.onnx"),
                        save_as_external_data=True, location=f"{name}.onnx.data", size_threshold=1024)
    x = features(19, INPUT_DIM, seed=5)
    victim = Victim(tmp_path, f"onnx:{tmp_path / 'am.onnx'},share_weights:{share}", x)
    try:
        numpy.testing.assert_allclose(victim.first, -numpy.log(bare_run(str(tmp_path / "am.onnx"), x)),
                                      rtol=2e-5, atol=2e-5)
        mapped, opened = victim.files_in_use()
        data = str(tmp_path / "am.onnx.data")
        assert data not in mapped and data not in opened
        _same_size_in_place(data, (tmp_path / "other.onnx.data").read_bytes())
        numpy.testing.assert_array_equal(victim.score(), victim.first)
        _shorter(data, (tmp_path / "other.onnx.data").read_bytes())
        numpy.testing.assert_array_equal(victim.score(), victim.first)
    finally:
        victim.close()
