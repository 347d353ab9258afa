"""Every bad value gets the library's own exception, naming the key or parameter,
what was expected and what came (the 0.1 findings of 'unclear errors')."""
import numpy
import pytest
from conftest import features, onnx_model, rasr_scorer

from sprintiface import ConfigError, FeatureError, ModelError, PriorError, ProtocolError
from sprintiface.cli import main
from sprintiface.config import load_config


@pytest.mark.parametrize("time, message", [
    (2**70, r"expected time 0 .*got time 1180591620717411303424"),
    (0.0, "expected time to be an int, got float 0.0"),
    (None, "expected time to be an int, got NoneType None"),
    ("3", "expected time to be an int, got str '3'"),
    (True, "expected time to be an int, got bool True"),
])
def test_add_feature_time_that_is_no_frame_index(mlp_path, time, message):
    scorer = rasr_scorer(f"onnx:{mlp_path},log_level:warning", 12, 30)
    with pytest.raises(FeatureError, match=message):
        scorer.add_feature(feature=features(1, 12)[0], time=time)
    x = features(3, 12)
    for t in range(3):  # numpy integers are integers
        scorer.add_feature(feature=x[t], time=numpy.int64(t))
    scorer.compute(num_frames=3)
    for time in (2**70, -2**70, 1.0, "0", None):
        with pytest.raises(ProtocolError, match="get_scores"):
            scorer.get_scores(time=time)
    for call in (scorer.compute, scorer.reset):
        with pytest.raises(ProtocolError, match="expected num_frames to be an int, got str"):
            call(num_frames="3")


@pytest.mark.parametrize("feature, message", [
    ([None] * 12, "expected a float32 numpy array of shape \\(12,\\), got list"),
    (numpy.zeros(12, numpy.int32), "expected float32 \\(or float64\\) values .*got dtype int32"),
    (memoryview(numpy.zeros(24, numpy.int32)[::2]), "got buffer format 'i'"),
    (memoryview(numpy.zeros(12, numpy.float16)), "got buffer format 'e'"),
    (numpy.zeros(12, ">f4"), "native byte order, got dtype >f4"),
])
def test_frames_are_refused_not_converted(mlp_path, feature, message):
    scorer = rasr_scorer(f"onnx:{mlp_path},log_level:warning", 12, 30)
    with pytest.raises(FeatureError, match=message):
        scorer.add_feature(feature=feature, time=0)


def test_non_finite_features_are_named_at_compute(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path},log_level:warning", 12, 30)
    x = features(5, 12)
    x[3, 7] = numpy.inf
    for t in range(5):
        scorer.add_feature(feature=x[t], time=t)
    with pytest.raises(FeatureError, match=r"frame 3 \(time 3\) holds inf at index 7"):
        scorer.compute(num_frames=5)
    scorer.reset(num_frames=5)


def test_configfile_errors(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, expected a TOML file"):
        load_config(f"configfile:{tmp_path}")
    (tmp_path / "latin1.toml").write_bytes('onnx = "m\xe9.onnx"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 9\)"):
        load_config(f"configfile:{tmp_path / 'latin1.toml'}")
    (tmp_path / "returnn.config").write_text("#!rnn.py\nimport os\nnetwork = {'output': {'class': 'softmax'}}\n")
    with pytest.raises(ConfigError, match="does not read RETURNN configs: export the network to ONNX"):
        load_config(f"configfile:{tmp_path / 'returnn.config'}")


def test_paths_in_a_configfile_are_relative_to_it(tmp_path, mlp_path, monkeypatch):
    import shutil

    (tmp_path / "setup").mkdir()
    shutil.copy(mlp_path, tmp_path / "setup" / "am.onnx")
    (tmp_path / "setup" / "am.toml").write_text('onnx = "am.onnx"\n')
    monkeypatch.chdir("/")
    scorer = rasr_scorer(f"configfile:{tmp_path / 'setup' / 'am.toml'},log_level:warning", 12, 30)
    assert scorer.engine.path == str(tmp_path / "setup" / "am.onnx")


def test_directories_given_as_files(tmp_path, mlp_path):
    with pytest.raises(ConfigError, match=f"'onnx': '{tmp_path}' is a directory, expected a file"):
        rasr_scorer(f"onnx:{tmp_path}", 12, 30)
    with pytest.raises(ConfigError, match=r"'prior_file': .* is a directory, expected a file"):
        rasr_scorer(f"onnx:{mlp_path},prior_file:{tmp_path}", 12, 30)


@pytest.mark.parametrize("values, message", [
    (numpy.array(["a"] * 30), "expected real numbers, got a .npy of dtype <U1"),
    (numpy.full(30, -3.0 + 1j), "expected real numbers, got a .npy of dtype complex128"),
    (numpy.full(30, True), "expected real numbers, got a .npy of dtype bool"),
])
def test_priors_of_the_wrong_kind(tmp_path, mlp_path, values, message):
    numpy.save(tmp_path / "prior.npy", values)
    with pytest.raises(PriorError, match=message):
        rasr_scorer(f"onnx:{mlp_path},prior_file:{tmp_path / 'prior.npy'}", 12, 30)


def test_score_of_an_empty_feature_file(tmp_path, mlp_path, capsys):
    numpy.savez(tmp_path / "empty.npz")
    assert main(["score", mlp_path, str(tmp_path / "empty.npz")]) == 2
    assert "holds no segments" in capsys.readouterr().err


def test_check_model_with_a_dynamic_feature_axis(write_model, capsys):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Softmax", ["data"], ["output"], axis=-1)], "dynamic",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["B", "T", "F"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", "T", "F"])])
    path = write_model(onnx_model(graph))
    assert main(["check-model", path, "--output-dim", "7"]) == 2
    assert "its feature axis is dynamic" in capsys.readouterr().err
    assert main(["check-model", path, "--input-dim", "7", "--output-dim", "7"]) == 0
    assert "scored 37 frames through RASR's calls" in capsys.readouterr().out
    assert main(["check-model", path, "--input-dim", "7", "--output-dim", "8"]) == 2
    assert "gives 7 classes" in capsys.readouterr().err


def test_model_errors_name_the_file(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match=r"empty.onnx"):
        rasr_scorer(f"onnx:{tmp_path / 'empty.onnx'}", 12, 30)


def test_a_config_that_is_no_string():
    import sprintiface
    from sprintiface import ConfigError

    with pytest.raises(ConfigError, match="expected RASR's pymod-config string, got int 123"):
        sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=None,
                         callback=None, version_number=5, config=123)
