"""RASR's nn-trainer without `buffer-type = utterance`: shuffled mini-batches of frames,
``segmentName=None``. A trainer that needs whole segments refuses the first one with an
error naming the two RASR keys; nop and forward accept them.

Every call is made as RASR makes it: keyword arguments only, features float32
(inputDim, T) in Fortran order (RASR's default batch is 1024 frames; smaller here).
"""
import os
from typing import ClassVar

import numpy
import pytest
from conftest import bare_run, end_training_session

import sprintiface
from sprintiface import ConfigError, TrainerError
from sprintiface.demos import TORCH_DEMO_MODEL_FILE
from sprintiface.training import Trainer

INPUT_DIM, CLASSES, BATCH = 12, 30, 64


@pytest.fixture(autouse=True)
def clean_session():
    yield
    end_training_session()


def frame_batch(seed=0):
    rng = numpy.random.default_rng(seed)
    return numpy.asfortranarray(rng.standard_normal((INPUT_DIM, BATCH)).astype(numpy.float32))


def rasr_init(config, target_mode, output_dim=CLASSES):
    sprintiface.init(inputDim=INPUT_DIM, outputDim=output_dim, allowDownsampling=0, config=config,
                     targetMode=target_mode, cudaEnabled=0, cudaActiveGpu=-1)


def assert_names_the_keys(error):
    text = str(error)
    assert "`buffer-type = utterance`" in text and "`shuffle = false`" in text and "segment None" in text


def test_the_dump_trainer_refuses_a_frame_batch_and_writes_nothing(tmp_path):
    pytest.importorskip("h5py")
    dump = tmp_path / "train.hdf"
    rasr_init(f"action:train,trainer:dump,dump_file:{dump}", "target-alignment")
    with pytest.raises(ConfigError) as refused:
        sprintiface.feedInputAndTargetAlignment(features=frame_batch(),
                                                targetAlignment=numpy.zeros(BATCH, numpy.uint32),
                                                weights=None, segmentName=None)
    assert_names_the_keys(refused.value)
    assert "DumpTrainer" in str(refused.value)
    # the run cannot complete: later calls say so, and exit() leaves no dump that looks complete
    with pytest.raises(TrainerError, match="segment None was rejected"):
        sprintiface.feedInputAndTargetAlignment(features=frame_batch(1),
                                                targetAlignment=numpy.zeros(BATCH, numpy.uint32),
                                                weights=None, segmentName="c/s1")
    sprintiface.exit()  # the refusal was reported where it happened; the trainer gets abort()
    assert not dump.exists() and not os.path.exists(f"{dump}.partial")


@pytest.mark.parametrize("mode, call, targets", [
    ("unsupervised", "feedInputUnsupervised", {}),
    ("target-generic", "feedInputAndTarget", {"alignment": numpy.zeros(BATCH, numpy.uint32), "orthography": None,
                                              "speaker_name": None, "speaker_gender": None}),
    ("target-segment-orth", "feedInputAndTargetSegmentOrth", {"targetSegmentOrth": "a b "}),
])
def test_the_refusal_holds_in_every_mode_that_trains(tmp_path, mode, call, targets):
    pytest.importorskip("h5py")
    rasr_init(f"action:train,trainer:dump,dump_file:{tmp_path / 'd.hdf'}", mode)
    with pytest.raises(ConfigError) as refused:
        getattr(sprintiface, call)(features=frame_batch(), weights=None, segmentName=None, **targets)
    assert_names_the_keys(refused.value)
    assert mode in str(refused.value)


def test_criterion_by_sprint_refuses_before_computing_posteriors(tmp_path, mlp_path):
    pytest.importorskip("h5py")
    rasr_init(f"action:train,trainer:dump,dump_file:{tmp_path / 'd.hdf'},onnx:{mlp_path}", "criterion-by-sprint")
    with pytest.raises(ConfigError) as refused:
        sprintiface.feedInput(features=frame_batch(), weights=None, segmentName=None)
    assert_names_the_keys(refused.value)


def test_nop_accepts_frame_batches():
    rasr_init("action:nop", "unsupervised")
    for seed in range(3):
        assert sprintiface.feedInputUnsupervised(features=frame_batch(seed), weights=None, segmentName=None) is None
    posteriors = sprintiface.feedInputForwarding(features=frame_batch(), weights=None, segmentName=None)
    numpy.testing.assert_allclose(posteriors, 1.0 / CLASSES)
    session = sprintiface._training().session
    assert session.segments == 4 and session.frames == 4 * BATCH
    sprintiface.exit()


def test_forward_accepts_frame_batches_with_the_models_posteriors(mlp_path):
    # A frame-wise model's posteriors of a batch of frames are the frames' own: well-defined.
    # (RASR's nn-trainer-feature-scorer also sends whole segments with segmentName None.)
    rasr_init(f"action:forward,onnx:{mlp_path}", "forward-only")
    features = frame_batch()
    posteriors = sprintiface.feedInputForwarding(features=features, weights=None, segmentName=None)
    assert posteriors.shape == (CLASSES, BATCH) and posteriors.flags.f_contiguous
    numpy.testing.assert_allclose(posteriors, bare_run(mlp_path, numpy.ascontiguousarray(features.T)).T,
                                  rtol=1e-5, atol=1e-6)
    sprintiface.exit()


class FrameTrainer(Trainer):
    """A user trainer on the documented protocol that learns from frame batches."""

    needs_segments = False
    seen: ClassVar[list] = []

    def train_segment(self, segment):
        FrameTrainer.seen.append((segment.name, segment.num_frames))


def make_frame_trainer(config, input_dim, output_dim, target_mode):
    return FrameTrainer(config, input_dim, output_dim, target_mode)


def test_a_user_trainer_declares_that_it_takes_frame_batches():
    FrameTrainer.seen.clear()
    rasr_init("action:train,trainer:test_frame_batches:make_frame_trainer,queue_size:0", "unsupervised")
    sprintiface.feedInputUnsupervised(features=frame_batch(), weights=None, segmentName=None)
    sprintiface.exit()
    assert FrameTrainer.seen == [(None, BATCH)]


def test_whole_named_segments_still_reach_the_trainer(tmp_path):
    h5py = pytest.importorskip("h5py")
    dump = tmp_path / "train.hdf"
    rasr_init(f"action:train,trainer:dump,dump_file:{dump}", "target-alignment")
    for index in range(2):
        sprintiface.feedInputAndTargetAlignment(features=frame_batch(index),
                                                targetAlignment=numpy.zeros(BATCH, numpy.uint32),
                                                weights=None, segmentName=f"c/s{index}")
    sprintiface.exit()
    with h5py.File(dump, "r") as file:
        assert file.attrs["numSeqs"] == 2


@pytest.mark.torch
def test_the_torch_trainer_refuses_a_frame_batch(tmp_path):
    pytest.importorskip("torch")
    model_file = tmp_path / "am.py"
    model_file.write_text(TORCH_DEMO_MODEL_FILE.format(input_dim=INPUT_DIM, classes=CLASSES))
    rasr_init(f"action:train,trainer:torch,model_file:{model_file},model:{tmp_path / 'am'}", "target-alignment")
    with pytest.raises(ConfigError) as refused:
        sprintiface.feedInputAndTargetAlignment(features=frame_batch(),
                                                targetAlignment=numpy.zeros(BATCH, numpy.uint32),
                                                weights=None, segmentName=None)
    assert_names_the_keys(refused.value)
    assert "TorchTrainer" in str(refused.value)
    sprintiface.exit()
    assert not list(tmp_path.glob("am.*.pt")) and not list(tmp_path.glob("am.*.onnx"))
