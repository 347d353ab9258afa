"""Several threads on one feature scorer: refused with ProtocolError, never a crash, never a wrong score.

RASR calls from one thread; the library's documented choice for any other use
is that the compiled FrameBuffer refuses a call while another is inside it.
Each scenario of tests/scorer_thread_scenarios.py runs for a few seconds in its
own process, so that a segfault fails the test (negative return code) instead
of killing pytest; afterwards the same scorer must score a fresh segment
exactly (the script checks that before it exits 0).
"""
import json
import os
import signal
import subprocess
import sys

import pytest
from onnx_models import build_mlp, save_model

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scorer_thread_scenarios.py")
SECONDS = 2.5

OVERLAP = "refused while another call was inside (ProtocolError)"

#: scenario -> counts that show the threads really met (at least one of each).
EVIDENCE = {
    "feed_while_computing": [OVERLAP, "computes", "rows checked"],
    "init_while_computing": ["init calls", "computes", "rows checked"],
    "two_computes": [OVERLAP, "computes", "rows checked"],
    "get_scores_while_computing": [OVERLAP, "computes", "rows checked"],
    "everything": ["computes", "rows checked"],
}


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory):
    """An MLP 40 -> 512 -> 512 -> 2000: a compute over 3000 frames takes long enough
    (a tenth of a second or more) for the other thread to arrive while it runs."""
    path = str(tmp_path_factory.mktemp("threads") / "mlp_40_2000.onnx")
    save_model(build_mlp(40, 2000, (512, 512), seed=5), path)
    return path


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """An MLP 40 -> 64 -> 2000: quick, with a score block of megabytes (its end is near a page
    boundary, so a write past it is likely to fault rather than pass unseen)."""
    path = str(tmp_path_factory.mktemp("threads") / "mlp_40_64_2000.onnx")
    save_model(build_mlp(40, 2000, (64,), seed=6), path)
    return path


def run_scenario(name, model_path, cwd, *variant):
    process = subprocess.run([sys.executable, SCRIPT, name, model_path, str(SECONDS), *variant], cwd=cwd,
                             capture_output=True, text=True, timeout=300)
    if process.returncode < 0:
        pytest.fail(f"scenario {name} {variant}: the process was killed by "
                    f"{signal.Signals(-process.returncode).name} (a crash)\nstdout:\n{process.stdout}\n"
                    f"stderr:\n{process.stderr[-3000:]}")
    lines = process.stdout.strip().splitlines()
    assert process.returncode == 0 and lines, (
        f"scenario {name}: rc {process.returncode}\nstdout:\n{process.stdout[-8000:]}\n"
        f"stderr:\n{process.stderr[-5000:]}")
    return json.loads(lines[-1])


@pytest.mark.parametrize("scenario", sorted(EVIDENCE))
def test_concurrent_calls_are_refused_and_scores_stay_exact(scenario, slow_model, tmp_path):
    report = run_scenario(scenario, slow_model, tmp_path)
    print(scenario, report["counts"])
    assert report["unexpected"] == []
    missing = [key for key in EVIDENCE[scenario] if not report["counts"].get(key)]
    assert not missing, f"the threads did not meet as the scenario needs ({missing} never happened): {report}"


def test_each_buffer_keeps_its_kernel_while_others_ask(slow_model, tmp_path):
    report = run_scenario("kernels", slow_model, tmp_path)
    print(report)
    assert report["unexpected"] == []
    for kernel in report["kernels"]:
        assert report["counts"].get(f"segments scored with {kernel}"), report
    assert report["counts"].get("kernel questions answered"), report


# Found by this test: compute() compared num_frames with the buffer's count, then opened the
# window for the count of a later moment; calls landing in between (another thread) made it
# write past the score block or serve rows the model never scored. The buffer now checks
# the count in open_window(num_frames), under its own guard.


@pytest.mark.parametrize("interference", [
    "shrink",
    "grow",
    "reinit",
])
def test_calls_landing_at_any_line_of_compute(interference, wide_model, tmp_path):
    """reset+add_feature (shrink), add_feature (grow) or init() made at each line of compute()
    in turn, as another thread's calls would land there (deterministic; see the script)."""
    report = run_scenario("calls_inside_compute", wide_model, tmp_path, interference)
    print(report)
    assert report["unexpected"] == []
    assert report["counts"].get(f"{interference}: lines of compute() tried", 0) > 5, report
