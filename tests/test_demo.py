"""The demo and the model shipped in the package."""
import io
import os
import subprocess
import sys

import sprintiface
from sprintiface.models import DEMO_MODEL
from sprintiface.demos import run_scorer_demo


def test_shipped_demo_model_is_what_the_script_makes(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    from make_demo_model import write_demo_model

    write_demo_model(str(tmp_path / "demo.onnx"))
    with open(DEMO_MODEL, "rb") as shipped:
        assert shipped.read() == (tmp_path / "demo.onnx").read_bytes(), "run: python tools/make_demo_model.py"


def test_the_shipped_demo_model_is_prepared():
    from sprintiface.onnx_proto import read_metadata

    assert "sprintiface.plan" in read_metadata(DEMO_MODEL)


def test_demo_replays_the_protocol_and_reports_rtf():
    out = io.StringIO()
    summary = run_scorer_demo(num_segments=2, num_frames=120, out=out)
    assert summary["frames"] == 240
    assert summary["real_time_factor"] > 0
    text = out.getvalue()
    assert "segment 1: 120 frames" in text and "real-time factor" in text
    assert "sum p per frame 1.0000..1.0000" in text


def test_the_api_demo_runs_twice(capsys):
    # sprintiface.demo() is a function; no module of that name may shadow it
    sprintiface.demo()
    sprintiface.demo()
    assert capsys.readouterr().out.count("real-time factor") == 2


def test_python_m_sprintiface_demo(tmp_path):
    # cwd away from the source tree, so that the installed package is what runs
    result = subprocess.run([sys.executable, "-m", "sprintiface", "demo", "--segments", "1", "--frames", "50"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "real-time factor" in result.stdout


def test_the_demo_runs_with_the_core_install(tmp_path):
    # numpy and onnxruntime only: the shipped model is prepared, nothing imports onnx
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from sprintiface.cli import main\nsys.exit(main(['demo', '--segments', '1', '--frames', '30']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "real-time factor" in result.stdout
