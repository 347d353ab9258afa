"""sprintiface prepare: a prepared model loads with onnxruntime alone, scores like the
plain one, shares its weights file, and is written complete or absent."""
import os
import signal
import stat
import subprocess
import sys
import textwrap

import numpy
import pytest
from conftest import AWAY_FROM_SOURCE, bare_run, features, make_engine, rasr_scorer, score_segment
from onnx_models import build_blstm, build_mlp

from sprintiface import ModelError
from sprintiface.cli import main
from sprintiface.onnx_proto import append_metadata, read_metadata

WITHOUT_ONNX = textwrap.dedent("""
    import sys, numpy
    sys.modules["onnx"] = None  # any import of onnx fails
    import sprintiface
    scorer = sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=None,
                              callback=None, version_number=5, config="onnx:" + sys.argv[1] + ",log_level:warning")
    scorer.init(input_dim=12, output_dim=30)
    x = numpy.load(sys.argv[2])
    for t in range(len(x)):
        scorer.add_feature(feature=x[t], time=t)
    scorer.compute(num_frames=len(x))
    numpy.save(sys.argv[3], numpy.stack([scorer.get_scores(time=t) for t in range(len(x))]))
    assert "onnx" not in sys.modules or sys.modules["onnx"] is None
""")


@pytest.mark.parametrize("form", [[], ["--plain"]])
@pytest.mark.parametrize("builder", [build_mlp, build_blstm])
def test_prepared_model_scores_without_onnx(tmp_path, write_model, form, builder, capsys):
    source = write_model(builder(12, 30, seed=4))
    prepared = str(tmp_path / "am.prepared.onnx")
    assert main(["prepare", source, "-o", prepared, *form]) == 0
    out = capsys.readouterr().out
    assert "serves" in out and ("pre-packed" in out) == (form == [])
    x = features(41, 12)
    numpy.save(tmp_path / "x.npy", x)
    result = subprocess.run([sys.executable, "-c", WITHOUT_ONNX, prepared, str(tmp_path / "x.npy"),
                             str(tmp_path / "scores.npy")], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    numpy.testing.assert_allclose(numpy.load(tmp_path / "scores.npy"), -numpy.log(bare_run(source, x)),
                                  rtol=2e-5, atol=2e-5)
    files = sorted(os.listdir(tmp_path))
    weights = [name for name in files if name.startswith("am.prepared.onnx.") and name.endswith(".data")]
    assert len(weights) == (0 if form else 1)
    assert not [name for name in files if name.startswith(".am.prepared")]  # no work directory left


def test_preparing_again_replaces_the_weights_file(tmp_path, mlp_path):
    prepared = str(tmp_path / "am.onnx")
    assert main(["prepare", mlp_path, "-o", prepared]) == 0
    first = [n for n in os.listdir(tmp_path) if n.endswith(".data")]
    assert main(["prepare", mlp_path, "-o", prepared]) == 0
    second = [n for n in os.listdir(tmp_path) if n.endswith(".data")]
    assert len(first) == len(second) == 1 and first != second
    engine = make_engine(prepared)
    assert engine.prepared and engine.kind == "logits" and engine.logit_bias.shape == (30,)
    # its weights are used from the mapped weights file (page cache: shared between processes)
    assert engine.shared_weight_bytes > 0


def test_without_onnx_a_plain_model_loads_and_prepare_says_what_it_needs(mlp_path, tmp_path):
    """onnx is needed to write a prepared model only: a plain one loads without it."""
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from sprintiface.config import load_config\nfrom sprintiface.engine import OnnxEngine\n"
            f"engine = OnnxEngine.from_config(load_config('onnx:{mlp_path}'))\n"
            "print(engine.prepared, engine.kind)\n"
            "from sprintiface.prepare import prepare_model\n"
            f"prepare_model({mlp_path!r}, {str(tmp_path / 'out.onnx')!r})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.stdout.split() == ["False", "logits"], result.stderr[-2000:]
    assert result.returncode == 1
    assert "ModelError" in result.stderr and "preparing a model needs the onnx package" in result.stderr and \
        "sprintiface[onnx]" in result.stderr
    assert not os.path.exists(tmp_path / "out.onnx")


def test_prepared_plan_wins_over_config_and_damage_is_named(tmp_path, mlp_path):
    prepared = str(tmp_path / "am.onnx")
    assert main(["prepare", mlp_path, "-o", prepared, "--plain"]) == 0
    with pytest.raises(ModelError, match="prepared with output_kind 'probs', but the config asks for 'logits'"):
        rasr_scorer(f"onnx:{prepared},output_kind:logits", 12, 30)
    assert "sprintiface.plan" in read_metadata(prepared)
    append_metadata(prepared, {"sprintiface.plan": "{not json"})  # the later entry wins
    with pytest.raises(ModelError, match=r"metadata is damaged.*prepare it again"):
        rasr_scorer(f"onnx:{prepared}", 12, 30)


def test_quantize_reports_accuracy_and_speed(tmp_path, write_model, capsys):
    source = write_model(build_mlp(40, 200, (128, 128), seed=5))
    numpy.savez(tmp_path / "sample.npz", a=features(300, 40, 1), b=features(200, 40, 2))
    prepared = str(tmp_path / "am.int8.onnx")
    assert main(["prepare", source, "-o", prepared, "--quantize", "--features", str(tmp_path / "sample.npz")]) == 0
    out = capsys.readouterr().out
    assert "int8 against float32 on 300 frames" in out and "agrees" in out and "us per frame" in out
    assert "static-weights" in out and ("int8 pays" in out or "int8 does not pay" in out)
    scorer = rasr_scorer(f"onnx:{prepared},log_level:warning", 40, 200)
    x = features(50, 40, 3)
    got, reference = score_segment(scorer, x), -numpy.log(bare_run(source, x))
    assert numpy.mean(got.argmin(axis=1) == reference.argmin(axis=1)) > 0.8
    assert numpy.abs(got - reference).max() < 1.0


def test_prepare_errors(tmp_path, mlp_path, capsys):
    assert main(["prepare", mlp_path, "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["prepare", mlp_path, "-o", str(tmp_path / "missing" / "am.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "garbage.onnx").write_bytes(b"\xff" * 100)
    assert main(["prepare", str(tmp_path / "garbage.onnx"), "-o", str(tmp_path / "out.onnx")]) == 2
    assert not (tmp_path / "out.onnx").exists()


def test_a_model_behind_a_symlink(tmp_path, mlp_path):
    os.symlink(mlp_path, tmp_path / "link.onnx")
    x = features(9, 12)
    numpy.testing.assert_allclose(score_segment(rasr_scorer(f"onnx:{tmp_path / 'link.onnx'}", 12, 30), x),
                                  -numpy.log(bare_run(mlp_path, x)), rtol=2e-5, atol=2e-5)


# -- replacing OUT: other models' weights, concurrent prepares, killed prepares, modes ------------------

def _prepare_process(source, output, pause=None):
    """``sprintiface prepare`` in its own process; with ``pause``, it stops itself (SIGSTOP)
    at that step (sprintiface.prepare.PAUSE_ENV) and is returned once stopped."""
    env = dict(os.environ)
    env.pop("SPRINTIFACE_PREPARE_PAUSE", None)
    if pause:
        env["SPRINTIFACE_PREPARE_PAUSE"] = pause
    process = subprocess.Popen([sys.executable, "-m", "sprintiface", "prepare", source, "-o", output],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=AWAY_FROM_SOURCE)
    if pause:
        _wait_for(process, lambda: _state(process.pid) == "T", f"prepare to stop at {pause}")
    return process


def _state(pid):
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat_file:
        return stat_file.read().rsplit(")", 1)[1].split()[0]


def _waits_for_a_lock(pid):
    with open("/proc/locks", encoding="utf-8") as locks:
        return any("->" in line and f" {pid} " in line for line in locks)


def _wait_for(process, condition, what, limit=300):
    import time

    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"waiting for {what}, the process ended: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{what}: not within {limit} s")
        time.sleep(0.02)


def _finish(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return out


def _weights_of(path):
    import json

    return json.loads(read_metadata(path)["sprintiface.packed_for"])["weights"]


def test_preparing_again_keeps_other_prepared_models_weights(tmp_path, mlp_path, write_model):
    int8 = str(tmp_path / "am.int8.onnx")
    source = write_model(build_mlp(12, 30, (256,), seed=3))  # int8 weights of over 1 KB: a weights file
    # --min-speedup 0 --min-agreement 0: int8 is written whatever this machine measures
    assert main(["prepare", source, "-o", int8, "--quantize", "--min-speedup", "0", "--min-agreement", "0"]) == 0
    am = str(tmp_path / "am")
    assert main(["prepare", mlp_path, "-o", am]) == 0
    first = _weights_of(am)
    assert main(["prepare", mlp_path, "-o", am]) == 0
    assert not (tmp_path / first).exists() and (tmp_path / _weights_of(am)).exists()
    assert (tmp_path / _weights_of(int8)).exists()  # am.int8.onnx.<id>.data: another model's, kept
    x = features(11, 12)
    assert score_segment(rasr_scorer(f"onnx:{int8},log_level:warning", 12, 30), x).shape == (11, 30)
    # a plain OUT over a shareable one removes the weights the shareable one named
    assert main(["prepare", mlp_path, "-o", am, "--plain"]) == 0
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("am.") and n.endswith(".data")) == \
        [_weights_of(int8)]


def test_concurrent_prepares_of_one_output_end_with_the_last_whole(tmp_path, write_model):
    """One prepare stopped between its renames (holding the lock), a second one into the
    same OUT waiting for it: both finish, OUT is the second's and its weights exist."""
    first_source = write_model(build_mlp(12, 30, (16,), seed=1))
    second_source = write_model(build_mlp(12, 30, (16,), seed=2))
    out = str(tmp_path / "am.onnx")
    assert main(["prepare", first_source, "-o", out]) == 0
    original = _weights_of(out)
    first = _prepare_process(first_source, out, pause="between-renames")
    second = _prepare_process(second_source, out)
    _wait_for(second, lambda: _waits_for_a_lock(second.pid), "the second prepare to wait for the lock")
    os.kill(first.pid, signal.SIGCONT)
    _finish(first)
    _finish(second)
    weights = [n for n in os.listdir(tmp_path) if n.startswith("am.onnx.") and n.endswith(".data")]
    assert weights == [_weights_of(out)] and weights[0] != original  # the others' removed, none leaked
    assert not (tmp_path / ".am.onnx.lock").exists()
    x = features(13, 12)
    numpy.testing.assert_allclose(score_segment(rasr_scorer(f"onnx:{out}", 12, 30), x),
                                  -numpy.log(bare_run(second_source, x)), rtol=2e-5, atol=2e-5)


def test_a_killed_prepare_leaves_scratch_that_the_next_removes(tmp_path, mlp_path):
    out = str(tmp_path / "am.onnx")

    def scratch():
        return sorted(n for n in os.listdir(tmp_path) if n.startswith(".am.onnx.") and n.endswith(".scratch"))

    killed = _prepare_process(mlp_path, out, pause="scratch-written")
    dead_scratch = scratch()
    assert len(dead_scratch) == 1 and os.listdir(tmp_path / dead_scratch[0])  # with what it wrote
    killed.kill()
    killed.communicate(timeout=60)  # reaped and its pipes closed (an unclosed one is a ResourceWarning: an error)
    live = _prepare_process(mlp_path, out, pause="scratch-written")
    live_scratch = [name for name in scratch() if name not in dead_scratch]
    assert len(live_scratch) == 1
    assert main(["prepare", mlp_path, "-o", out]) == 0
    assert scratch() == live_scratch  # the dead one's removed, the live one's kept
    os.kill(live.pid, signal.SIGCONT)
    _finish(live)
    assert scratch() == [] and make_engine(out).prepared


def test_prepared_files_are_not_writable_by_others_whatever_the_umask(tmp_path, mlp_path):
    out = str(tmp_path / "am.onnx")
    code = ("import os, sys\nos.umask(0)\nfrom sprintiface.cli import main\n"
            f"sys.exit(main(['prepare', {mlp_path!r}, '-o', {out!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=AWAY_FROM_SOURCE)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / _weights_of(out)).st_mode) == 0o444
