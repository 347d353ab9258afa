"""docs/from-rasr-onnx-scorer.md, tried: for each combination of RASR's native
onnx-feature-scorer flags, the native score formula computed in numpy from a bare
onnxruntime run equals sprintiface's scores under the mapped config (through RASR's calls).

The native formula (RASR's src/Onnx/OnnxFeatureScorer.cc, getScore): ``y`` the model
output for (position, class); with use-output-as-is the score is ``y``; otherwise
``log(y)`` if apply-log-on-output, negated if negate-output, then
``+ priori-scale * log p(s)`` when priori-scale is not 0 (prior from prior-file, else
from the mixture set's weights: uniform for a dummy set).
"""
import itertools
import os
import re

import numpy
import onnxruntime
import pytest

import sprintiface
from onnx_models import build_mlp, save_model
from sprintiface.priors import save_prior
from sprintiface.rasr_calls import rasr_scorer_calls

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_DIM, CLASSES = 12, 30
#: What a model with each head outputs (tools/onnx_models.py heads).
HEAD_OF_OUTPUT = {"log-softmax": "log_probs", "softmax": "probs", "-log-softmax": "scores"}


def flag_table():
    """The doc's output-flags table: rows of (apply_log, negate, as_is, model output, output_kind)."""
    with open(os.path.join(ROOT, "docs", "from-rasr-onnx-scorer.md"), encoding="utf-8") as file:
        text = file.read()
    table = re.search(r"<!-- output-flags:start -->\n(.*?)<!-- output-flags:end -->", text, re.S).group(1)
    rows = []
    for line in table.strip().split("\n")[2:]:
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        rows.append(cells)
    return rows


def native_scores(path, features, apply_log, negate, as_is, log_prior, prior_scale):
    """RASR's onnx-feature-scorer on (T, F) features: the model run as RASR runs it
    ([1, T, F] input, features-size [1] int32), then its getScore per element, float32."""
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {"data": features[None]}
    if any(info.name == "data:size1" for info in session.get_inputs()):
        feeds["data:size1"] = numpy.array([features.shape[0]], numpy.int32)
    y = session.run(["output"], feeds)[0][0].astype(numpy.float32)
    if as_is:
        return y
    score = numpy.log(y) if apply_log else y
    if negate:
        score = -score
    if prior_scale != 0:
        score = score + numpy.float32(prior_scale) * log_prior[None, :]
    return score.astype(numpy.float32)


def sprintiface_scores(config, segments):
    return [scores for _, scores in rasr_scorer_calls(sprintiface, config, segments, INPUT_DIM, CLASSES)]


def flag_values(cell):
    return (False, True) if cell == "any" else (cell == "true",)


ROWS = flag_table()


def test_the_table_covers_every_combination_of_the_flags():
    covered = set()
    for apply_log, negate, as_is, _, _ in ROWS:
        covered |= set(itertools.product(flag_values(apply_log), flag_values(negate), flag_values(as_is)))
    assert covered == set(itertools.product((False, True), repeat=3))


#: The table's cell for a combination without a sprintiface equivalent (an en dash, as the page writes it).
NO_MAPPING = "\N{EN DASH}"


@pytest.mark.parametrize("row", [r for r in ROWS if r[4] != NO_MAPPING and not r[4].startswith("no equivalent")],
                         ids=lambda row: "/".join(row[:3]))
@pytest.mark.parametrize("prior_scale", [0.0, 0.7, 1.0])
@pytest.mark.parametrize("with_length", [True, False])
def test_the_mapped_config_scores_as_the_native_scorer(tmp_path, row, prior_scale, with_length):
    apply_log_cell, negate_cell, as_is_cell, output, kind_cell = row
    as_is = as_is_cell == "true"
    kind = kind_cell.split("`")[0].split(",")[0].strip()
    rng = numpy.random.default_rng(5)
    log_prior = numpy.log(rng.dirichlet(numpy.ones(CLASSES))).astype(numpy.float32)
    prior_path = str(tmp_path / "prior.xml")
    save_prior(prior_path, log_prior)  # RASR's XML format, as the native prior-file
    segments = [rng.standard_normal((length, INPUT_DIM)).astype(numpy.float32) for length in (17, 6)]
    # as-is: whatever the model outputs is the score; try it on every kind of head
    heads = list(HEAD_OF_OUTPUT.values()) if as_is else [HEAD_OF_OUTPUT[output]]
    for head, apply_log, negate in itertools.product(heads, flag_values(apply_log_cell), flag_values(negate_cell)):
        path = str(tmp_path / f"{head}.onnx")
        save_model(build_mlp(INPUT_DIM, CLASSES, (16,), seed=4, output_kind=head,
                             length_name="data:size1" if with_length else None), path)
        config = f"onnx:{path},output_kind:{kind}"
        if not as_is:  # use-output-as-is skips the prior: the mapping drops it
            config += f",prior_file:{prior_path},prior_scale:{prior_scale}"
        configs = [config]
        if not as_is:  # the flags' kind is what auto detects from the final node
            configs.append(config.replace(f",output_kind:{kind}", ""))
        for mapped in configs:
            ours = sprintiface_scores(mapped, segments)
            for features, scores in zip(segments, ours):
                expected = native_scores(path, features, apply_log, negate, as_is, log_prior, prior_scale)
                numpy.testing.assert_allclose(scores, expected, rtol=1e-5, atol=2e-5, err_msg=f"{row} {mapped}")


def test_the_unmapped_combination_prefers_the_least_likely_state(tmp_path):
    (row,) = [r for r in ROWS if r[:3] == ["true", "false", "false"]]
    assert row[4].startswith("no equivalent")
    path = str(tmp_path / "probs.onnx")
    save_model(build_mlp(INPUT_DIM, CLASSES, (16,), seed=4, output_kind="probs"), path)
    features = numpy.random.default_rng(1).standard_normal((9, INPUT_DIM)).astype(numpy.float32)
    scores = native_scores(path, features, True, False, False, None, 0.0)
    posteriors = native_scores(path, features, False, False, True, None, 0.0)
    assert (scores.argmin(axis=1) == posteriors.argmin(axis=1)).all()  # the lowest cost is the least likely


@pytest.mark.parametrize("prior_scale", [0.7, 1.0])
def test_without_prior_file_the_native_uniform_prior_is_a_constant_shift(tmp_path, prior_scale):
    # No prior-file, priori-scale != 0: the native scorer's prior comes from the dummy mixture
    # set's equal weights, log(1/C) for every class.
    path = str(tmp_path / "am.onnx")
    save_model(build_mlp(INPUT_DIM, CLASSES, (16,), seed=6, output_kind="log_probs"), path)
    uniform = numpy.full(CLASSES, -numpy.log(CLASSES), numpy.float32)
    segments = [numpy.random.default_rng(2).standard_normal((11, INPUT_DIM)).astype(numpy.float32)]
    native = native_scores(path, segments[0], False, True, False, uniform, prior_scale)
    (plain,) = sprintiface_scores(f"onnx:{path}", segments)
    numpy.testing.assert_allclose(native - plain, -prior_scale * numpy.log(CLASSES), rtol=1e-5, atol=2e-5)
    assert (native.argmin(axis=1) == plain.argmin(axis=1)).all()
    uniform_path = str(tmp_path / "uniform.xml")
    save_prior(uniform_path, uniform)
    (same,) = sprintiface_scores(f"onnx:{path},prior_file:{uniform_path},prior_scale:{prior_scale}", segments)
    numpy.testing.assert_allclose(same, native, rtol=1e-5, atol=2e-5)
