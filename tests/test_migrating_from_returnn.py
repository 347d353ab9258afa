"""docs/migrating-from-returnn.md, tried: the prior of an i6_core ReturnnScorer setup
(RASR's nn-trainer-feature-scorer, prior from the prior_mixtures weights) made into a prior
file with the page's own Python block, and sprintiface's scores under the new config equal
to the old scorer's formula on a bare onnxruntime run."""
import os
import re
import struct

import numpy
import pytest
from conftest import bare_run

import sprintiface
from onnx_models import build_mlp, save_model
from sprintiface import ConfigError
from sprintiface.mixtures import dummy_mixture_set, prior_from_mixture_set
from sprintiface.priors import load_prior
from sprintiface.rasr_calls import rasr_scorer_calls

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_DIM, CLASSES = 12, 30


def page():
    with open(os.path.join(ROOT, "docs", "migrating-from-returnn.md"), encoding="utf-8") as file:
        return file.read()


def estimator_mixture_set(weights, dim=3):
    """RASR's binary estimator layout (version 2) with one mixture per row of ``weights``,
    each of its densities with that weight (as GMM training leaves counts with
    normalize-mixture-weights = false)."""
    densities = sum(len(row) for row in weights)
    accumulator = lambda value: struct.pack(f"<I{dim}dd", dim, *([value] * dim), 1.0)  # noqa: E731
    parts = [b"MIXSET\0\0", struct.pack("<II", 2, dim),
             struct.pack("<I", densities), accumulator(0.0) * densities,
             struct.pack("<I", densities), accumulator(1.0) * densities,
             struct.pack("<I", densities), b"".join(struct.pack("<II", d, d) for d in range(densities)),
             struct.pack("<I", len(weights))]
    index = 0
    for row in weights:
        parts.append(struct.pack("<I", len(row)))
        for weight in row:
            parts.append(struct.pack("<Id", index, weight))
            index += 1
    return b"".join(parts)


def mixture_weights(seed=0):
    rng = numpy.random.default_rng(seed)
    return [list(rng.uniform(1.0, 500.0, int(rng.integers(1, 4)))) for _ in range(CLASSES)]


def test_the_pages_python_block_converts_the_mixture_weights(tmp_path, monkeypatch):
    weights = mixture_weights()
    (tmp_path / "prior.mix").write_bytes(estimator_mixture_set(weights))
    block = re.search(r"### The prior.*?```python\n(.*?)```", page(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "migrating-from-returnn.md", "exec"), {})
    totals = numpy.array([sum(row) for row in weights])
    # RASR's Nn::Prior::setFromMixtureSet: log(sum of a mixture's weights / sum over all)
    numpy.testing.assert_allclose(load_prior(str(tmp_path / "prior.xml")), numpy.log(totals / totals.sum()),
                                  rtol=1e-6, atol=1e-6)


def test_the_new_config_scores_as_the_returnn_scorer_did(tmp_path):
    weights = mixture_weights(1)
    mix = tmp_path / "prior.mix"
    mix.write_bytes(estimator_mixture_set(weights))
    from sprintiface.priors import save_prior

    save_prior(str(tmp_path / "prior.xml"), prior_from_mixture_set(str(mix)))
    prefix = str(tmp_path / "network")
    save_model(build_mlp(INPUT_DIM, CLASSES, (16,), seed=8, length_name="data:size1"), f"{prefix}.080.onnx")
    after = re.search(r"# after: sprintiface as the feature scorer\n(.*?)```", page(), re.S).group(1)
    pymod = re.search(r"pymod-config\s*=\s*(\S+)", after).group(1)
    assert pymod == "action:forward,model:net-model/network,epoch:80,prior_file:prior.xml,prior_scale:0.7"
    pymod = pymod.replace("net-model/network", prefix).replace("prior.xml", str(tmp_path / "prior.xml"))
    rng = numpy.random.default_rng(3)
    segments = [rng.standard_normal((length, INPUT_DIM)).astype(numpy.float32) for length in (13, 5)]
    scored = [scores for _, scores in rasr_scorer_calls(sprintiface, pymod, segments, INPUT_DIM, CLASSES)]
    totals = numpy.array([sum(row) for row in weights])
    log_prior = numpy.log(totals / totals.sum()).astype(numpy.float32)
    for features, scores in zip(segments, scored):
        # nn-trainer-feature-scorer: posteriors from the trainer, then -log p + priori-scale * log prior
        posteriors = bare_run(f"{prefix}.080.onnx", features)
        expected = -numpy.log(posteriors) + numpy.float32(0.7) * log_prior
        numpy.testing.assert_allclose(scores, expected, rtol=1e-5, atol=2e-5)


def test_a_dummy_mixture_set_gives_a_uniform_prior(tmp_path):
    path = tmp_path / "dummy.mix"
    path.write_bytes(dummy_mixture_set(CLASSES, 40))
    numpy.testing.assert_allclose(prior_from_mixture_set(str(path)), numpy.full(CLASSES, -numpy.log(CLASSES)))


@pytest.mark.parametrize("data, message", [
    (b"<?xml version='1.0'?><mixture-set/>", "starts with MIXSET"),
    (b"MIXSET\0\0" + struct.pack("<II", 1, 3), "expected version 2"),
    (estimator_mixture_set([[1.0], [2.0]])[:-5], "the file ends at byte"),
    (estimator_mixture_set([[1.0], [0.0]]), "mixture 1 has total weight 0.0"),
    (estimator_mixture_set([[1.0]]) + b"\0", "1 bytes after the last mixture"),
])
def test_other_files_are_refused_naming_what_came(tmp_path, data, message):
    path = tmp_path / "other.mix"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        prior_from_mixture_set(str(path))
    assert str(path) in str(refused.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        prior_from_mixture_set(str(tmp_path / "absent.mix"))
