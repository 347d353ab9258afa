"""The log RASR collects: level-named warnings, and log_level's text is what the code does."""
import logging
import subprocess
import sys

from conftest import AWAY_FROM_SOURCE, features, rasr_scorer, score_segment
from hypothesis import given, settings
from hypothesis import strategies as st

from sprintiface.config import OPTIONS
from sprintiface.log import LEVELS, SCORER_SEGMENT_LEVEL, TRAINER_SEGMENT_LEVEL


def test_warnings_and_errors_name_their_level_info_lines_do_not(tmp_path):
    code = ("from sprintiface.config import load_config\n"
            "from sprintiface.log import configure_logging, logger\n"
            "configure_logging(load_config('log_level:info'))\n"
            "logger.info('ready'); logger.warning('odd'); logger.error('bad'); logger.debug('hidden')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["sprintiface: ready", "sprintiface WARNING: odd", "sprintiface ERROR: bad"]


def test_the_log_level_table_is_made_from_the_levels_the_code_logs_at():
    option = OPTIONS["log_level"]
    assert option.choices == tuple(LEVELS)
    for name, meaning in LEVELS.items():
        assert f"{name}: {meaning}" in option.help
    assert SCORER_SEGMENT_LEVEL == logging.DEBUG and TRAINER_SEGMENT_LEVEL == logging.INFO
    assert "a line per buffer from the feature scorer" in LEVELS["debug"]
    assert "feature scorer" not in LEVELS["info"].split("trainer's epochs")[1]


def test_the_scorer_logs_a_line_per_buffer_only_at_debug(mlp_path, caplog):
    x = features(20, 12)
    for level, expected in (("info", 0), ("debug", 1)):
        caplog.clear()
        scorer = rasr_scorer(f"onnx:{mlp_path},log_level:{level}", 12, 30)
        with caplog.at_level(logging.getLevelName(level.upper()), logger="sprintiface"):
            score_segment(scorer, x)
        per_buffer = [r for r in caplog.records if "compute" in r.getMessage() and "RTF" in r.getMessage()
                      and r.getMessage().startswith("unknown-seq-name")]
        assert len(per_buffer) == expected, (level, caplog.text)


_CALLS = r"""
import json, sys
if sys.argv[1] == "logging-first":
    import logging
from sprintiface.config import load_config
from sprintiface.log import configure_logging, logger
calls = json.loads(sys.argv[2])
configure_logging(load_config("log_level:" + calls["level"]))
for method, message, args in calls["calls"]:
    if method == "exception":
        try:
            raise ValueError("the cause")
        except ValueError:
            logger.exception(message, *args)
    elif method == "import logging":
        import logging
    else:
        getattr(logger, method)(message, *args)
print("logging" in sys.modules)
"""


def _log_lines(mode, calls):
    import json

    result = subprocess.run([sys.executable, "-c", _CALLS, mode, json.dumps(calls)], capture_output=True,
                            text=True, timeout=60, cwd=AWAY_FROM_SOURCE)
    assert result.returncode == 0, result.stderr
    return result.stderr, result.stdout.strip() == "True"


_MESSAGES = st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="%"),
                             max_size=12), min_size=0, max_size=2)


@st.composite
def _call_lists(draw):
    calls = []
    for _ in range(draw(st.integers(1, 8))):
        method = draw(st.sampled_from(["debug", "info", "warning", "error", "exception", "import logging"]))
        args = draw(_MESSAGES)
        text = draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="%"),
                            max_size=20))
        calls.append([method, text + " %s" * len(args), args])
    return {"level": draw(st.sampled_from(sorted(LEVELS))), "calls": calls}


@settings(max_examples=12, deadline=None)
@given(_call_lists())
def test_without_logging_the_lines_are_logging_s_own(calls):
    """The fast path (no logging module: sprintiface writes the lines) against its slow twin
    (logging imported first: logging's logger and handler write them): the same stderr,
    level by level, with %-arguments, tracebacks, and logging imported half-way."""
    direct, direct_imported = _log_lines("direct", calls)
    through_logging, _ = _log_lines("logging-first", calls)
    assert direct == through_logging
    assert direct_imported == any(method == "import logging" for method, _, _ in calls["calls"])


def test_a_cold_job_never_imports_logging(mlp_path):
    """A scoring job as RASR runs it, at the default log_level info: its lines are written,
    and logging (with its handler and formatter machinery) is never imported."""
    code = ("import sys\nimport numpy\nimport sprintiface\n"
            f"scorer = sprintiface.init(name='Sprint.PythonControl', sprint_unit='PythonFeatureScorer', "
            f"reference=None, callback=None, version_number=5, config='onnx:{mlp_path}')\n"
            "scorer.init(input_dim=12, output_dim=30)\n"
            "for t in range(7):\n    scorer.add_feature(feature=numpy.zeros(12, numpy.float32), time=t)\n"
            "scorer.compute(num_frames=7)\nscorer.get_scores(time=0)\nscorer.reset(num_frames=7)\n"
            "scorer.exit()\nprint('logging' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=AWAY_FROM_SOURCE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert "sprintiface: scorer done: 1 segments, 7 frames" in result.stderr, result.stderr
