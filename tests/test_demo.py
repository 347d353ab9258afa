"""The demo and the model shipped in the package."""
import io
import subprocess
import sys

from onnx_models import build_demo

import sprintiface
from sprintiface.models import DEMO_MODEL
from sprintiface.replay import run_scorer_demo


def test_shipped_demo_model_is_what_the_script_makes():
    with open(DEMO_MODEL, "rb") as file:
        assert file.read() == build_demo().SerializeToString()


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
