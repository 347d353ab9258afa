"""The scorer's summary at exit() counts every segment RASR scored.

speech-recognizer and the aligner call reset(num_frames=0) before the first segment,
reset between segments, and none after the last one: exit() comes right after the
last segment's get_scores (../shared spec, section 1, item 8).
"""
import logging

import numpy
import pytest
from conftest import features

import sprintiface
from rasr_driver import drive_add_feature, drive_compute, drive_get_scores, drive_reset
from sprintiface.rasr_calls import rasr_scorer_calls


def summary(caplog):
    lines = [r.getMessage() for r in caplog.records if r.name == "sprintiface" and "scorer done" in r.getMessage()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("count", [1, 2, 5])
def test_exit_counts_the_last_segment_that_was_never_reset(mlp_path, caplog, count):
    caplog.set_level(logging.INFO, logger="sprintiface")
    lengths = [7 + 3 * index for index in range(count)]
    scorer = sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=object(),
                              callback=lambda *args: None, version_number=5, config=f"onnx:{mlp_path}")
    scorer.init(input_dim=12, output_dim=30)
    assert scorer.get_feature_buffer_size() == -1
    drive_reset(scorer, 0)  # before the first segment, through the C driver as RASR calls it
    for index, length in enumerate(lengths):
        if index:
            drive_reset(scorer, lengths[index - 1])
        drive_add_feature(scorer, features(length, 12, seed=index))
        drive_compute(scorer, length)
        drive_get_scores(scorer, length, 30)
    scorer.exit()  # no reset for the last segment
    assert f"scorer done: {count} segments, {sum(lengths)} frames" in summary(caplog)


def test_the_projects_rasr_driver_gets_every_segment_counted(mlp_path, caplog):
    caplog.set_level(logging.INFO, logger="sprintiface")
    segments = [features(length, 12, seed=length) for length in (5, 9, 4, 11)]
    scored = list(rasr_scorer_calls(sprintiface, f"onnx:{mlp_path}", segments, 12, 30))
    assert [index for index, _ in scored] == [0, 1, 2, 3]
    assert "scorer done: 4 segments, 29 frames" in summary(caplog)


def test_exit_after_a_reset_last_segment_does_not_count_it_twice(mlp_path, caplog):
    # Flf's recognizer and other hosts may reset after the last segment too.
    caplog.set_level(logging.INFO, logger="sprintiface")
    scorer = sprintiface.init(name="Sprint.PythonControl", sprint_unit="PythonFeatureScorer", reference=object(),
                              callback=lambda *args: None, version_number=5, config=f"onnx:{mlp_path}")
    scorer.init(input_dim=12, output_dim=30)
    for length in (6, 8):
        drive_add_feature(scorer, features(length, 12))
        drive_compute(scorer, length)
        numpy.asarray(drive_get_scores(scorer, length, 30)[1])
        drive_reset(scorer, length)
    scorer.exit()
    assert "scorer done: 2 segments, 14 frames" in summary(caplog)
