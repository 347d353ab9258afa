"""The node's weights cache (share_weights:true) does not grow with every model a node ever ran:
a job that writes a new copy removes the copies no job used for SPRINTIFACE_CACHE_MAX_AGE_DAYS
(7 by default); every use marks its copy used; a removed copy stays valid for the jobs that
mapped it. Real models, real sessions, real files."""
import os
import shutil
import time

import numpy
import pytest
from conftest import features, make_engine
from onnx_models import build_mlp

import sprintiface
from sprintiface.weight_store import CACHE_MAX_AGE_DAYS, cache_max_age_days, remove_unused_copies

INPUT_DIM, OUTPUT_DIM = 12, 30
DAY = 86400.0


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SPRINTIFACE_CACHE_DIR", str(folder))
    monkeypatch.delenv("SPRINTIFACE_CACHE_MAX_AGE_DAYS", raising=False)
    return folder


def _age(path, days):
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def _copies(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".data"))


def test_a_new_copy_removes_the_ones_unused_for_the_max_age_and_keeps_the_rest(cache, write_model):
    old = make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=1)), share_weights=True)
    recent = make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=2)), share_weights=True)
    _age(old.weights_file, CACHE_MAX_AGE_DAYS + 1)
    _age(recent.weights_file, CACHE_MAX_AGE_DAYS - 1)
    new = make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=3)), share_weights=True)
    assert _copies(cache) == sorted(os.path.basename(engine.weights_file) for engine in (recent, new))
    assert not [name for name in os.listdir(cache) if not name.endswith(".data")]  # no lock or temporary left


def test_using_a_copy_marks_it_used_and_a_cache_hit_removes_nothing(cache, write_model):
    path = write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=4))
    first = make_engine(path, share_weights=True)
    other = make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=5)), share_weights=True)
    _age(first.weights_file, CACHE_MAX_AGE_DAYS + 1)
    _age(other.weights_file, CACHE_MAX_AGE_DAYS + 1)
    aged = os.stat(first.weights_file).st_mtime
    # a hit (the same weights under another name: one process makes one engine per file):
    # it marks its copy used, writes nothing and removes nothing
    shutil.copyfile(path, path + ".again.onnx")
    again = make_engine(path + ".again.onnx", share_weights=True)
    assert again.weights_file == first.weights_file
    assert os.stat(first.weights_file).st_mtime > aged  # marked used: no longer the aged mark
    assert len(_copies(cache)) == 2
    make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=6)), share_weights=True)
    assert os.path.exists(first.weights_file) and not os.path.exists(other.weights_file)


def test_a_job_keeps_scoring_from_a_copy_another_job_removed(cache, write_model):
    job = make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=7)), share_weights=True)
    x = features(9, INPUT_DIM, seed=1)
    before = job.forward(x)
    _age(job.weights_file, CACHE_MAX_AGE_DAYS + 1)
    make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=8)), share_weights=True)
    assert not os.path.exists(job.weights_file)
    numpy.testing.assert_array_equal(job.forward(x), before)


def test_the_max_age_comes_from_the_environment(cache, write_model, monkeypatch):
    monkeypatch.setenv("SPRINTIFACE_CACHE_MAX_AGE_DAYS", "30")
    assert cache_max_age_days() == 30.0
    kept = make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=9)), share_weights=True)
    _age(kept.weights_file, 29)
    make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=10)), share_weights=True)
    assert os.path.exists(kept.weights_file)
    monkeypatch.setenv("SPRINTIFACE_CACHE_MAX_AGE_DAYS", "0.5")
    assert remove_unused_copies(str(cache), cache_max_age_days()) == [kept.weights_file]


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan", "inf"])
def test_a_bad_max_age_is_a_config_error_naming_the_variable_and_the_value(cache, write_model, monkeypatch, value):
    path = write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=11))
    monkeypatch.setenv("SPRINTIFACE_CACHE_MAX_AGE_DAYS", value)
    with pytest.raises(sprintiface.ConfigError, match=f"SPRINTIFACE_CACHE_MAX_AGE_DAYS.*> 0.*{value!r}"):
        make_engine(path, share_weights=True)


def test_files_that_are_not_copies_are_left_alone(cache, write_model):
    make_engine(write_model(build_mlp(INPUT_DIM, OUTPUT_DIM, (64,), seed=12)), share_weights=True)
    stranger = cache / "notes.data"
    stranger.write_text("mine")
    _age(stranger, 100)
    assert remove_unused_copies(str(cache), 1.0) == []
    assert stranger.exists()
