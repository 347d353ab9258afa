"""sprintiface.sisyphus: the i6_core feature scorer, checked on i6_core's real jobs.

The tests that build jobs need i6_core and Sisyphus importable (neither is on
PyPI: put checkouts on PYTHONPATH) and skip otherwise; the import behaviour
and the extra_config checks run everywhere.
"""
import os
import re
import subprocess
import sys
import tempfile
import textwrap

import pytest

from sprintiface import ConfigError
from sprintiface.sisyphus import MissingDependencyError, pymod_config_items

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, *args: str, **env) -> str:
    """``code`` in a fresh interpreter, its stdout. It runs away from the source tree (whose
    unbuilt ``sprintiface`` folder would shadow the installed package) and finds i6_core and
    Sisyphus as this process did: through PYTHONPATH."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                            cwd=tempfile.gettempdir(), env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- without i6_core ---------------------------------------------------------------

def test_module_imports_without_i6_core_and_the_class_says_what_it_needs():
    out = _run("""
        import sys
        sys.modules["i6_core"] = None  # as if i6_core were not installed
        import sprintiface.sisyphus as module
        try:
            module.SprintifaceFeatureScorer
        except module.MissingDependencyError as error:
            print(type(error).__name__, isinstance(error, ImportError), error)
        try:
            from sprintiface.sisyphus import SprintifaceFeatureScorer
        except ImportError as error:
            print("from-import:", type(error).__name__)
    """)
    assert out.startswith("MissingDependencyError True ")
    assert "needs i6_core and Sisyphus" in out
    assert "from-import: MissingDependencyError" in out
    assert issubclass(MissingDependencyError, ImportError)


@pytest.mark.parametrize("key, parameter", [("onnx", "onnx_model"), ("model", "onnx_model"),
                                            ("prior_file", "prior_file"), ("prior_scale", "prior_scale")])
def test_extra_config_repeating_a_parameter_is_refused_naming_the_key(key, parameter):
    with pytest.raises(ConfigError, match=f"key '{key}' is set by the parameter {parameter}"):
        pymod_config_items("am.onnx", "prior.txt", 0.7, {"output_kind": "logits", key: "x"})


@pytest.mark.parametrize("extra, message", [
    ({"prior_scal": 0.5}, "unknown sprintiface key 'prior_scal'"),
    ({"intra_op_threads": "two"}, "config key 'intra_op_threads'"),
    ({"output_kind": "logits,x:1"}, "holds ,"),
    ({"log_level": None}, "has the value None"),
])
def test_extra_config_is_checked_when_the_graph_is_built(extra, message):
    with pytest.raises(ConfigError, match=message):
        pymod_config_items("am.onnx", extra_config=extra)


def test_items_are_ordered_so_dict_order_cannot_change_the_hash():
    first = pymod_config_items("am.onnx", "prior.txt", None, {"output_kind": "logits", "intra_op_threads": 2})
    second = pymod_config_items("am.onnx", "prior.txt", None, {"intra_op_threads": 2, "output_kind": "logits"})
    assert first == second == [("onnx", "am.onnx"), ("prior_file", "prior.txt"), ("prior_scale", 1.0),
                               ("intra_op_threads", 2), ("output_kind", "logits")]
    with pytest.raises(ConfigError, match=r"prior_scale 0.7 needs a prior_file"):
        pymod_config_items("am.onnx", None, 0.7)


# -- with i6_core --------------------------------------------------------------------

def _docs_block() -> dict:
    """The scorer block of docs/recognition.md as key -> value (comments dropped)."""
    with open(os.path.join(ROOT, "docs", "recognition.md"), encoding="utf-8") as file:
        text = file.read()
    block = re.search(r"```ini\n\[\*\.acoustic-model\.mixture-set\]\n(.*?)```", text, re.S).group(1)
    items = {}
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, value = (part.strip() for part in line.split("=", 1))
            items[key] = value
    return items


def _written_block(config, section: str) -> dict:
    """What i6_core writes under ``section`` (its repr is the config file), as key -> value."""
    text = repr(config)
    body = re.search(rf"^\[{re.escape(section)}\]\n(.*?)(?:\n\n|\Z)", text, re.S | re.M).group(1)
    return {key.strip(): value.strip() for key, value in (line.split("=", 1) for line in body.splitlines())}


SETUP = """
from sisyphus import tk
import i6_core.rasr as rasr
from i6_core.mm.alignment import AlignmentJob
from i6_core.recognition import AdvancedTreeSearchJob

RECOGNITION_SECTION = "flf-lattice-tool.network.recognizer.acoustic-model.mixture-set"
ALIGNMENT_SECTION = ("acoustic-model-trainer.aligning-feature-extractor.feature-extraction.alignment."
                     "model-combination.acoustic-model.mixture-set")


def crp_and_flow():
    crp = rasr.CommonRasrParameters()
    rasr.crp_add_default_output(crp)
    crp.flf_tool_exe = tk.Path("/rasr/flf-tool")
    crp.acoustic_model_trainer_exe = tk.Path("/rasr/acoustic-model-trainer")
    crp.corpus_config = rasr.RasrConfig()
    crp.corpus_config.file = tk.Path("/data/corpus.xml.gz")
    crp.lexicon_config = rasr.RasrConfig()
    crp.lexicon_config.file = tk.Path("/data/lexicon.xml.gz")
    crp.acoustic_model_config = rasr.RasrConfig()
    crp.acoustic_model_config.state_tying.type = "monophone"
    crp.language_model_config = rasr.RasrConfig()
    crp.language_model_config.type = "ARPA"
    crp.language_model_config.file = tk.Path("/data/lm.arpa.gz")
    crp.language_model_config.scale = 10.0
    crp.concurrent = 1
    flow = rasr.FlowNetwork()
    flow.add_param("id")
    cache = flow.add_node("generic-cache", "features", {"id": "$(id)", "path": tk.Path("/data/features.cache")})
    flow.add_output("features")
    flow.link(cache, "network:features")
    return crp, flow


def jobs(scorer, **recognition):
    crp, flow = crp_and_flow()
    return (AdvancedTreeSearchJob(crp=crp, feature_flow=flow, feature_scorer=scorer, **recognition),
            AlignmentJob(crp=crp, feature_flow=flow, feature_scorer=scorer))


def written(job):
    config = job.config._copy()
    config._update(job.post_config)  # what RasrCommand.write_config writes
    return config
"""


@pytest.fixture
def i6():
    """The SETUP helpers with the real i6_core, and a fresh pymod_path record."""
    pytest.importorskip("i6_core")
    pytest.importorskip("sisyphus")
    from sprintiface.sisyphus import SprintifaceFeatureScorer

    namespace = {}
    exec(SETUP, namespace)
    saved = SprintifaceFeatureScorer._process_pymod_path
    SprintifaceFeatureScorer._process_pymod_path = None
    namespace["Scorer"] = SprintifaceFeatureScorer
    yield type("I6", (), namespace)
    SprintifaceFeatureScorer._process_pymod_path = saved


def _docs_scorer(i6, **overrides):
    from sisyphus import tk

    arguments = dict(mixtures=tk.Path("/setup/dummy.mix"), onnx_model=tk.Path("/setup/am.onnx"),
                     feature_dimension=40, output_dimension=9001, prior_file=tk.Path("/setup/prior.xml"),
                     prior_scale=0.7)
    arguments.update(overrides)
    return i6.Scorer(**arguments)


def test_recognition_and_alignment_write_the_block_of_recognition_md(i6):
    import i6_core.rasr

    scorer = _docs_scorer(i6)
    assert isinstance(scorer, i6_core.rasr.FeatureScorer)
    recognition, alignment = i6.jobs(scorer)
    expected = _docs_block()
    for job, section in ((recognition, i6.RECOGNITION_SECTION), (alignment, i6.ALIGNMENT_SECTION)):
        block = {key: value.replace("/setup/", "") for key, value in _written_block(i6.written(job), section).items()}
        assert block == expected, section


def test_job_hashes_are_stable_across_processes_and_follow_the_model(i6):
    ids = [job._sis_id() for job in i6.jobs(_docs_scorer(i6, extra_config={"output_kind": "logits",
                                                                           "intra_op_threads": 1}))]
    out = _run(SETUP + """
from sisyphus import tk
from sprintiface.sisyphus import SprintifaceFeatureScorer
scorer = SprintifaceFeatureScorer(mixtures=tk.Path("/setup/dummy.mix"), onnx_model=tk.Path("/setup/am.onnx"),
                                  feature_dimension=40, output_dimension=9001, prior_file=tk.Path("/setup/prior.xml"),
                                  prior_scale=0.7, extra_config={"intra_op_threads": 1, "output_kind": "logits"})
print(" ".join(job._sis_id() for job in jobs(scorer)))
""", PYTHONHASHSEED="12345")
    assert out.split() == ids
    other = [job._sis_id() for job in i6.jobs(_docs_scorer(i6, prior_scale=0.5))]
    assert other[0] != ids[0] and other[1] != ids[1]


PYMOD_PATH_RUN = SETUP + """
import re
import sys
from sisyphus import tk
from sprintiface.sisyphus import SprintifaceFeatureScorer
scorer = SprintifaceFeatureScorer(mixtures=tk.Path("/setup/dummy.mix"), onnx_model=tk.Path("/setup/am.onnx"),
                                  feature_dimension=40, output_dimension=9001, pymod_path=sys.argv[1])
for job, section in zip(jobs(scorer), (RECOGNITION_SECTION, ALIGNMENT_SECTION)):
    text = repr(written(job))
    print(job._sis_id(), len(re.findall("^pymod-path +=  *" + re.escape(sys.argv[1]) + "$", text, re.M)))
"""


def test_pymod_path_is_written_and_in_no_jobs_hash(i6):
    def run(path):
        return [line.split() for line in _run(PYMOD_PATH_RUN, path).splitlines()]

    first, second = run("/opt/a/site-packages"), run("/opt/b/site-packages")
    assert [count for _, count in first] == ["1", "1"]  # recognition and alignment each write it once
    assert [job for job, _ in first] == [job for job, _ in second]  # AlignmentJob included


def test_i6_core_makes_jobs_differing_only_in_an_unhashed_value_one_job(i6):
    """The trap the class guards against, with i6_core's own base class: the second job is
    the first object, and the second pymod_path is never written."""
    from i6_core.rasr.feature_scorer import FeatureScorer

    def plain(path):
        scorer = FeatureScorer()
        scorer.config.feature_scorer_type = "python-feature-scorer"
        scorer.config.pymod_name = "sprintiface"
        scorer.post_config.pymod_path = path
        return scorer

    first, _ = i6.jobs(plain("/opt/a"))
    second, _ = i6.jobs(plain("/opt/b"))
    assert second is first
    assert "/opt/b" not in repr(i6.written(second))
    # and AlignmentJob hashes i6_core's post_config: there the plain value changes the job
    assert i6.jobs(plain("/opt/a"))[1]._sis_id() != i6.jobs(plain("/opt/b"))[1]._sis_id()


def test_a_second_pymod_path_in_one_process_is_refused(i6):
    _docs_scorer(i6, pymod_path="/opt/a")
    _docs_scorer(i6, pymod_path="/opt/a", prior_scale=0.3)  # the same path: fine
    for other in ("/opt/b", None):
        with pytest.raises(ConfigError, match="differs from '/opt/a' of an earlier scorer"):
            _docs_scorer(i6, pymod_path=other)


def test_lm_image_job_gets_the_scorer_unless_given_a_cheap_one(i6):
    recognition, _ = i6.jobs(_docs_scorer(i6))
    image_job = recognition.lm_gc_job
    assert "/setup/am.onnx" in {str(path) for path in image_job._sis_inputs}  # it waits for the model
    assert "python-feature-scorer" in repr(i6.written(image_job))  # and its RASR would load it
    # The image job hashes no scorer: the first recognition that makes it decides which it
    # gets, so a fresh process, where the cheap scorer comes first.
    out = _run(SETUP + """
from sisyphus import tk
from sprintiface.sisyphus import SprintifaceFeatureScorer
scorer = SprintifaceFeatureScorer(mixtures=tk.Path("/setup/dummy.mix"), onnx_model=tk.Path("/setup/am.onnx"),
                                  feature_dimension=40, output_dimension=9001, prior_file=tk.Path("/setup/prior.xml"),
                                  prior_scale=0.7)
cheap, _ = jobs(scorer, lmgc_scorer=scorer.lm_image_scorer())
later, _ = jobs(scorer)  # without lmgc_scorer: the same image job, with the cheap scorer
for job in (cheap, later):
    print(job._sis_id(), "/setup/am.onnx" in {str(path) for path in job.lm_gc_job._sis_inputs},
          "python-feature-scorer" in repr(written(job.lm_gc_job)),
          "diagonal-maximum" in repr(written(job.lm_gc_job)), job.lm_gc_job is later.lm_gc_job)
""")
    first, second = (line.split() for line in out.splitlines())
    assert first[0] == second[0] == recognition._sis_id()  # lmgc_scorer does not change the recognition
    assert first[1:] == second[1:] == ["False", "False", "True", "True"]


def test_scorer_pickles_as_sisyphus_saves_jobs(i6):
    import pickle

    scorer = _docs_scorer(i6)
    again = pickle.loads(pickle.dumps(scorer))
    assert type(again) is i6.Scorer
    assert repr(again.config) == repr(scorer.config)


def test_bad_arguments_are_config_errors(i6):
    with pytest.raises(ConfigError, match="key 'prior_scale' is set by the parameter prior_scale"):
        _docs_scorer(i6, extra_config={"prior_scale": 0.3})
    with pytest.raises(ConfigError, match="expected feature_dimension to be an int > 0, got str '40'"):
        _docs_scorer(i6, feature_dimension="40")


def test_every_code_block_of_sisyphus_md_is_marked_as_needing_i6_core():
    with open(os.path.join(ROOT, "docs", "sisyphus.md"), encoding="utf-8") as file:
        lines = file.read().splitlines()
    fences = [index for index, line in enumerate(lines) if line.startswith("```python") or line.startswith("```sh")]
    assert fences
    for index in fences:
        assert lines[index - 1] == "<!-- needs: i6_core -->", lines[index]
