"""The log RASR collects: level-named warnings, and log_level's text is what the code does."""
import logging
import subprocess
import sys

from conftest import features, rasr_scorer, score_segment

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
