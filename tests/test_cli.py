"""The command line on real models and real files."""
import os

import numpy
import pytest
from conftest import AWAY_FROM_SOURCE, bare_run, features

from sprintiface.cli import main
from sprintiface.priors import load_prior


@pytest.fixture
def feature_files(tmp_path):
    segments = {"a": features(30, 12, 1), "b": features(45, 12, 2)}
    numpy.savez(tmp_path / "feats.npz", **segments)
    numpy.save(tmp_path / "one.npy", segments["a"])
    return tmp_path, segments


def test_check_model_prints_interface_and_rasr_settings(mlp_path, capsys):
    assert main(["check-model", mlp_path, "--input-dim", "12", "--output-dim", "30"]) == 0
    out = capsys.readouterr().out
    assert "'data' float [B, T, 12]: features" in out
    assert "output kind: probs (made by Softmax)" in out
    assert "feature-dimension                      = 12" in out
    assert f"pymod-config                           = onnx:{mlp_path}" in out


def test_check_model_mismatch_fails_clearly(mlp_path, tmp_path, capsys):
    assert main(["check-model", mlp_path, "--input-dim", "13"]) == 2
    assert "takes features of dim 12 (input 'data'), but RASR's feature-dimension is 13" in capsys.readouterr().err
    (tmp_path / "p.txt").write_text("-1\n-2\n")
    assert main(["check-model", mlp_path, "--prior", str(tmp_path / "p.txt")]) == 2
    assert "has 2 values, but the model has 30 classes" in capsys.readouterr().err


def test_score_npz_and_npy_through_the_rasr_path(mlp_path, feature_files, capsys):
    directory, segments = feature_files
    assert main(["score", mlp_path, str(directory / "feats.npz"), "-o", str(directory / "s.npz")]) == 0
    with numpy.load(directory / "s.npz") as scores:
        assert sorted(scores.files) == ["a", "b"]
        for name, x in segments.items():
            numpy.testing.assert_allclose(scores[name], -numpy.log(bare_run(mlp_path, x)), rtol=2e-5, atol=2e-5)
    assert main(["score", mlp_path, str(directory / "one.npy"), "-o", str(directory / "s.npy"),
                 "--buffer-size", "7"]) == 0
    numpy.testing.assert_allclose(numpy.load(directory / "s.npy"), -numpy.log(bare_run(mlp_path, segments["a"])),
                                  rtol=2e-5, atol=2e-5)
    assert main(["score", mlp_path, str(directory / "missing.npz")]) == 2
    assert "feature file" in capsys.readouterr().err


def test_score_reads_the_dump_trainers_hdf(mlp_path, tmp_path):
    h5py = pytest.importorskip("h5py")
    x = features(20, 12)
    with h5py.File(tmp_path / "f.hdf", "w") as file:
        file["inputs"] = numpy.concatenate([x, x[:5]])
        file["seqLengths"] = numpy.array([[20, 0], [5, 0]], numpy.int32)
        file["seqTags"] = numpy.array([b"s/1", b"s/2"])
    assert main(["score", mlp_path, str(tmp_path / "f.hdf"), "-o", str(tmp_path / "s.npz")]) == 0
    with numpy.load(tmp_path / "s.npz") as scores:
        assert scores["s/2"].shape == (5, 30)


def test_estimate_prior_in_every_format(mlp_path, feature_files):
    directory, segments = feature_files
    assert main(["estimate-prior", mlp_path, str(directory / "feats.npz"), "-o", str(directory / "prior.txt"),
                 "--all-formats"]) == 0
    posteriors = numpy.concatenate([bare_run(mlp_path, x) for x in segments.values()]).astype(numpy.float64)
    expected = numpy.log(posteriors.mean(axis=0))
    for suffix in ("txt", "xml", "npy"):
        numpy.testing.assert_allclose(load_prior(str(directory / f"prior.{suffix}")), expected, atol=1e-5)


def test_info_and_config_table(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "score kernel" in out
    assert main(["config-table"]) == 0
    assert "| `prior_scale` | `1.0` |" in capsys.readouterr().out


def test_dummy_mixtures_in_rasrs_estimator_layout(tmp_path, capsys):
    import struct

    path = tmp_path / "dummy.mix"
    assert main(["dummy-mixtures", "--classes", "5", "--dim", "3", "-o", str(path)]) == 0
    assert "mixture-set.file" in capsys.readouterr().out
    data = path.read_bytes()
    assert data[:8] == b"MIXSET\0\0" and struct.unpack_from("<II", data, 8) == (2, 3)
    offset = 16
    for value in (0.0, 1.0):  # one mean (zeros), one covariance (ones), each with weight 1
        count, size, *sums, weight = struct.unpack_from("<II3dd", data, offset)
        assert (count, size, sums, weight) == (1, 3, [value] * 3, 1.0)
        offset += 4 + 4 + 3 * 8 + 8
    assert struct.unpack_from("<III", data, offset) == (1, 0, 0)  # one density
    offset += 12
    assert struct.unpack_from("<I", data, offset) == (5,)
    offset += 4
    assert [struct.unpack_from("<IId", data, offset + 16 * i) for i in range(5)] == [(1, 0, 1.0)] * 5
    assert offset + 5 * 16 == len(data)
    assert main(["dummy-mixtures", "--classes", "0", "--dim", "3", "-o", str(tmp_path / "bad.mix")]) == 2
    assert not (tmp_path / "bad.mix").exists()


def run_cli(*argv, **environment):
    """The installed command in a fresh process, away from the source tree."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, **environment)
    return subprocess.run([sys.executable, "-m", "sprintiface", *argv], capture_output=True, text=True,
                          timeout=120, env=env, cwd=environment.get("TMPDIR", AWAY_FROM_SOURCE))


def test_version(capsys):
    import sprintiface

    with pytest.raises(SystemExit) as exit_status:
        main(["--version"])
    assert exit_status.value.code == 0
    assert capsys.readouterr().out == f"sprintiface {sprintiface.__version__}\n"


def test_every_command_has_a_summary_and_every_option_a_meaning():
    import argparse

    from sprintiface.cli import _subcommand, build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    overview = parser.format_help()
    for choice in commands._choices_actions:
        assert choice.help, choice.dest
        assert choice.dest in overview
    for name in commands.choices:
        sub = _subcommand(parser, name)
        text = sub.format_help()
        assert sub.description and sub.description.split("\n\n")[0].endswith("."), name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
            if action.default not in (None, False):
                # an option with a default shows it (argparse's %(default)s or a "default:" of its own)
                assert "default" in (action.help + sub._get_formatter()._get_help_string(action)), (name, action.dest)
        assert "usage: sprintiface " + name in text


def test_the_buffer_size_help_says_what_rasr_does():
    from sprintiface.cli import _subcommand, build_parser

    text = " ".join(_subcommand(build_parser(), "score").format_help().split())
    assert "aborts at frame N+1" in text and "chunked mode as in RASR" not in text


@pytest.mark.parametrize("argv, message", [
    (["demo", "--train", "--segments", "2"], "--segments only with the scorer demo (no --train)"),
    (["demo", "--epochs", "2"], "--epochs only with --train"),
    (["demo", "--directory", "d"], "--directory only with --train"),
    (["demo", "--trainer", "--frames", "2"], "--frames only with the scorer demo (no --trainer)"),
    (["demo", "--trainer", "--train"], "not allowed with argument"),
    (["prepare", "m.onnx", "-o", "p.onnx", "--features", "f.npz"], "--features only with --quantize"),
    (["score", "m.onnx", "f.npz", "--prior-scale", "0.5"], "--prior-scale only with --prior"),
    (["check-model", "m.onnx", "--prior-space", "prob"], "--prior-space only with --prior"),
])
def test_an_option_without_the_one_it_needs_is_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(argv)
    assert exit_status.value.code == 2
    err = capsys.readouterr().err
    assert message in err and f"usage: sprintiface {argv[0]}" in err


def test_errors_are_one_line_never_a_traceback(tmp_path, mlp_path):
    result = run_cli("dummy-mixtures", "--classes", "3", "--dim", "2", "-o", str(tmp_path / "no" / "x.mix"))
    assert result.returncode == 1
    assert result.stderr.startswith("sprintiface: error: dummy-mixtures: ") and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1
    result = run_cli("check-model", mlp_path, "--input-dim", "13")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("sprintiface: error: check-model: ModelError: ")


def test_the_training_demo_leaves_nothing_in_the_temp_dir(tmp_path):
    pytest.importorskip("h5py")
    result = run_cli("demo", "--trainer", TMPDIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "fed 12 segments over 2 epochs" in result.stdout
    assert os.listdir(tmp_path) == []
