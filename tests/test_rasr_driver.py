"""The C driver calls the scorer as RASR does, and copies out what get_scores returns."""
import numpy
from conftest import bare_run, features, rasr_scorer

from rasr_driver import drive_add_feature, drive_compute, drive_get_scores, drive_reset, drive_segment


def test_driver_replays_a_segment_with_keyword_calls(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    x = features(40, 12)
    costs, scores = drive_segment(scorer, x, 30)
    assert set(costs) == {"add_feature", "compute", "get_scores", "reset"}
    numpy.testing.assert_allclose(scores, -numpy.log(bare_run(mlp_path, x)), rtol=2e-5, atol=2e-5)
    assert scorer.get_features().shape == (12, 0)


def test_driver_copies_strided_rows_and_surfaces_errors(mlp_path):
    scorer = rasr_scorer(f"onnx:{mlp_path}", 12, 30)
    x = features(5, 12)
    drive_add_feature(scorer, x)
    drive_compute(scorer, 5)
    _, kept = drive_get_scores(scorer, 5, 30)
    numpy.testing.assert_array_equal(kept, numpy.stack([scorer.get_scores(time=t) for t in range(5)]))
    _, last = drive_get_scores(scorer, 5, 30, keep=False)
    numpy.testing.assert_array_equal(last[0], kept[4])
    drive_reset(scorer, 5)

    class Strided:  # returns column views of a (C, T) matrix, as RETURNN does
        matrix = numpy.ascontiguousarray(kept.T)  # column views are strided

        def get_scores(self, time):
            return self.matrix[:, time]

    _, copied = drive_get_scores(Strided(), 5, 30)
    numpy.testing.assert_array_equal(copied, kept)
    try:
        drive_get_scores(scorer, 1, 30)
    except Exception as error:  # no scores after reset: the scorer's own error comes through
        assert "no scores" in str(error)
    else:
        raise AssertionError("expected the scorer's ProtocolError")
