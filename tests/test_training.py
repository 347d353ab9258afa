"""The PythonTrainer replayed as RASR calls it: keyword arguments, Fortran float32
features (inputDim, T), uint32 alignments, None weights."""
import os
import subprocess
import sys
import textwrap

import numpy
import pytest
import recording_trainer
from conftest import bare_run, end_training_session, onnx_model

import sprintiface
from sprintiface import ConfigError, FeatureError, ProtocolError, TrainerError

h5py = pytest.importorskip("h5py")


@pytest.fixture(autouse=True)
def clean_session():
    recording_trainer.CALLS.clear()
    recording_trainer.KEPT.clear()
    recording_trainer.RecordingTrainer.fail_on = None
    yield
    end_training_session()


def rasr_features(num_frames, dim=12, seed=0):
    rng = numpy.random.default_rng(seed)
    return numpy.asfortranarray(rng.standard_normal((dim, num_frames)).astype(numpy.float32))


def rasr_init(config, target_mode, input_dim=12, output_dim=30, allow_downsampling=False):
    return sprintiface.init(inputDim=input_dim, outputDim=output_dim, allowDownsampling=allow_downsampling,
                            config=config, targetMode=target_mode, cudaEnabled=0, cudaActiveGpu=-1)


def test_forwarding_returns_fortran_posteriors(mlp_path):
    assert rasr_init(f"action:forward,onnx:{mlp_path}", "forward-only") is None
    features = rasr_features(33)
    posteriors = sprintiface.feedInputForwarding(features=features, weights=None, segmentName="s1")
    assert posteriors.shape == (30, 33) and posteriors.dtype == numpy.float32
    assert posteriors.flags.f_contiguous  # RASR's zero-copy layout
    numpy.testing.assert_allclose(posteriors, bare_run(mlp_path, numpy.ascontiguousarray(features.T)).T,
                                  rtol=1e-5, atol=1e-7)
    again = sprintiface.feedInput(features=features, weights=None, segmentName="s1")  # criterion-by-sprint style
    numpy.testing.assert_allclose(again, posteriors)
    sprintiface.finishDiscard()
    sprintiface.exit()


def _downsampling_model(write_model):
    from onnx import TensorProto, helper, numpy_helper

    rng = numpy.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Slice", ["data", "start", "end", "axis", "step"], ["every2"]),
         helper.make_node("MatMul", ["every2", "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["output"], axis=-1)],
        "down", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["B", "T", 12])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["B", "T2", 30])],
        initializer=[numpy_helper.from_array(rng.standard_normal((12, 30)).astype(numpy.float32), "W")]
        + [numpy_helper.from_array(numpy.array([v], numpy.int64), n)
           for n, v in (("start", 0), ("end", 2**62), ("axis", 1), ("step", 2))])
    return write_model(onnx_model(graph))


def test_downsampling_needs_allow_downsampling(write_model):
    path = _downsampling_model(write_model)
    rasr_init(f"action:forward,onnx:{path}", "forward-only")
    with pytest.raises(FeatureError, match=r"posteriors of shape \(5, 30\) .* for 10 frames.*allowDownsampling"):
        sprintiface.feedInputForwarding(features=rasr_features(10), weights=None, segmentName="s")
    sprintiface.exit()
    rasr_init(f"action:forward,onnx:{path}", "forward-only", allow_downsampling=True)
    assert sprintiface.feedInputForwarding(features=rasr_features(10), weights=None, segmentName="s").shape == (30, 5)


def read_dump(path):
    with h5py.File(path, "r") as file:
        keys = sorted(file["targets/data"])
        return {
            "inputs": file["inputs"][...], "tags": [t.decode() for t in file["seqTags"][...]],
            "lengths": file["seqLengths"][...], "keys": keys,
            "targets": {k: file[f"targets/data/{k}"][...] for k in keys},
            "size": {k: list(file["targets/size"].attrs[k]) for k in keys},
            "labels": sorted(file["targets/labels"]), "attrs": dict(file.attrs),
        }


def test_target_alignment_dump_reads_back_bit_exact_in_returnn_layout(tmp_path):
    dump = tmp_path / "train.hdf"
    config = f"action:train,trainer:dump,dump_file:{dump},num_epochs:2"
    names = [f"c/s{i}" for i in range(3)]
    order = sprintiface.getSegmentList(corpusName="c", segmentList=names, segmentsInfo=None, config=config)
    fed = []
    for index, name in enumerate(order):
        if not fed:
            rasr_init(config, "target-alignment")
        features = rasr_features(5 + index, seed=index)
        alignment = numpy.arange(5 + index, dtype=numpy.uint32) % 30
        weights = None if index % 2 else numpy.full(5 + index, 0.5, numpy.float32)
        sprintiface.feedInputAndTargetAlignment(features=features, targetAlignment=alignment, weights=weights,
                                                segmentName=name)
        fed.append((name, features.T.copy(), alignment, weights))
    assert not dump.exists()  # complete or absent: still under a temporary name
    sprintiface.exit()
    data = read_dump(dump)
    assert data["tags"] == [name for name, *_ in fed]
    numpy.testing.assert_array_equal(data["inputs"], numpy.concatenate([f for _, f, _, _ in fed]))
    assert data["keys"] == ["classes", "weights"] and data["labels"] == ["classes", "weights"]
    assert data["size"] == {"classes": [30, 1], "weights": [1, 1]}
    numpy.testing.assert_array_equal(data["targets"]["classes"], numpy.concatenate([a for _, _, a, _ in fed]))
    expected_lengths = [[f.shape[0], f.shape[0], 0 if w is None else f.shape[0]] for _, f, _, w in fed]
    numpy.testing.assert_array_equal(data["lengths"], expected_lengths)
    assert data["attrs"]["inputPattSize"] == 12 and data["attrs"]["numSeqs"] == 6
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


@pytest.mark.parametrize("mode", ["target-generic", "target-segment-orth", "unsupervised"])
def test_other_target_modes_dump(tmp_path, mode):
    dump = tmp_path / "d.hdf"
    rasr_init(f"action:train,dump_file:{dump},queue_size:0", mode)
    features = rasr_features(4)
    if mode == "target-generic":
        sprintiface.feedInputAndTarget(features=features, weights=None, segmentName="a", alignment=None,
                                       orthography="hello wörld", speaker_name="spk1", speaker_gender="female")
        sprintiface.feedInputAndTarget(features=features, weights=None, segmentName="b",
                                       alignment=numpy.zeros(4, numpy.uint32), orthography=None,
                                       speaker_name=None, speaker_gender=None)
    elif mode == "target-segment-orth":
        sprintiface.feedInputAndTargetSegmentOrth(features=features, targetSegmentOrth="hello wörld",
                                                  weights=None, segmentName="a")
    else:
        sprintiface.feedInputUnsupervised(features=features, weights=None, segmentName="a")
    sprintiface.exit()
    data = read_dump(dump)
    numpy.testing.assert_array_equal(data["inputs"][:4], features.T)
    if mode != "unsupervised":
        assert bytes(data["targets"]["orth"]).decode("utf-8") == "hello wörld"
    if mode == "target-generic":
        assert data["keys"] == ["classes", "orth", "speaker_gender", "speaker_name", "weights"]
        assert bytes(data["targets"]["speaker_name"]).decode() == "spk1"
        assert data["lengths"][:, 1].tolist() == [0, 4]  # classes: none for a, 4 frames for b
    else:
        assert data["keys"] == (["orth", "weights"] if mode == "target-segment-orth" else ["weights"])


def test_criterion_by_sprint_round_trip_and_order_errors(mlp_path):
    rasr_init(f"action:train,trainer:recording_trainer:make,onnx:{mlp_path}", "criterion-by-sprint")
    features = rasr_features(6)
    with pytest.raises(ProtocolError, match=r"finishError.*without a segment"):
        sprintiface.finishError(error=1.0, errorSignal=numpy.zeros((30, 6), numpy.float32), naturalPairingType=None)
    posteriors = sprintiface.feedInput(features=features, weights=None, segmentName="s1")
    assert posteriors.shape == (30, 6) and posteriors.flags.f_contiguous
    with pytest.raises(FeatureError,
                       match=r"expected a float32 errorSignal of shape \(30, 6\).*got float32 \(30, 5\)"):
        sprintiface.finishError(error=1.0, errorSignal=numpy.zeros((30, 5), numpy.float32),
                                naturalPairingType="softmax")
    with pytest.raises(FeatureError, match=r"float32 errorSignal.*got float64 \(30, 6\)"):
        sprintiface.finishError(error=1.0, errorSignal=numpy.zeros((30, 6)), naturalPairingType="softmax")
    signal = numpy.asfortranarray(numpy.full((30, 6), 0.25, numpy.float32))
    sprintiface.finishError(error=2.5, errorSignal=signal, naturalPairingType="softmax")
    with pytest.raises(ProtocolError, match=r"finishError.*without"):
        sprintiface.finishError(error=2.5, errorSignal=signal, naturalPairingType="softmax")
    sprintiface.feedInput(features=features, weights=None, segmentName="s3")
    sprintiface.finishDiscard()
    with pytest.raises(ProtocolError, match=r"finishDiscard.*without"):
        sprintiface.finishDiscard()
    sprintiface.exit()
    assert ("backward", "s1", 2.5, (6, 30), "softmax", 0.25) in recording_trainer.CALLS
    assert ("discard", "s3") in recording_trainer.CALLS
    assert not any(call[0] == "backward" and call[1] == "s3" for call in recording_trainer.CALLS)
    assert recording_trainer.CALLS[-1] == ("finish",)


def test_a_segment_fed_out_of_order_ends_the_run_incomplete(mlp_path):
    rasr_init(f"action:train,trainer:recording_trainer:make,onnx:{mlp_path}", "criterion-by-sprint")
    features = rasr_features(6)
    sprintiface.feedInput(features=features, weights=None, segmentName="s1")
    with pytest.raises(ProtocolError, match="feedInput for segment 's2' while segment 's1' still waits"):
        sprintiface.feedInput(features=features, weights=None, segmentName="s2")
    # s2 never reached the trainer: the run cannot be complete any more
    with pytest.raises(TrainerError, match=r"segment 's2' was rejected.*cannot complete.*init"):
        sprintiface.finishDiscard()
    sprintiface.exit()
    assert recording_trainer.CALLS[-1] == ("abort",) and ("finish",) not in recording_trainer.CALLS


def test_epochs_checkpoints_and_resume(tmp_path):
    checkpoints = tmp_path / "ckpt"
    config = f"action:train,trainer:recording_trainer:make,num_epochs:2,checkpoint_dir:{checkpoints},queue_size:0"
    names = ["a", "b"]
    for index, name in enumerate(sprintiface.getSegmentList(corpusName="c", segmentList=names, segmentsInfo=None,
                                                            config=config)):
        if index == 0:
            rasr_init(config, "target-alignment")
        sprintiface.feedInputAndTargetAlignment(features=rasr_features(3), targetAlignment=numpy.zeros(3, numpy.uint32),
                                                weights=None, segmentName=name)
    sprintiface.exit()
    assert [c for c in recording_trainer.CALLS if c[0] != "train_segment"] == [
        ("start_epoch", 1), ("end_epoch", 1), ("save_checkpoint", 1), ("start_epoch", 2),
        ("end_epoch", 2), ("save_checkpoint", 2), ("finish",)]
    assert [c[3] for c in recording_trainer.CALLS if c[0] == "train_segment"] == [1, 1, 2, 2]
    assert sorted(os.listdir(checkpoints)) == ["epoch.001.done", "epoch.002.done", "model.001", "model.002"]
    # a restarted job with more epochs resumes after epoch 2 and loads its checkpoint
    recording_trainer.CALLS.clear()
    config = config.replace("num_epochs:2", "num_epochs:3")
    order = list(sprintiface.getSegmentList(corpusName="c", segmentList=names, segmentsInfo=None, config=config))
    assert order == names
    rasr_init(config, "target-alignment")
    sprintiface.feedInputAndTargetAlignment(features=rasr_features(3), targetAlignment=numpy.zeros(3, numpy.uint32),
                                            weights=None, segmentName="a")
    assert recording_trainer.CALLS[:2] == [("load_checkpoint", 2), ("start_epoch", 3)]


def test_background_failure_surfaces_at_the_next_call():
    recording_trainer.RecordingTrainer.fail_on = "bad"
    rasr_init("action:train,trainer:recording_trainer:make,queue_size:2", "unsupervised")
    sprintiface.feedInputUnsupervised(features=rasr_features(3), weights=None, segmentName="bad")
    sprintiface._training().session._queue.join()
    with pytest.raises(TrainerError, match=r"(?s)background thread failed.*ValueError: cannot learn from bad"):
        sprintiface.feedInputUnsupervised(features=rasr_features(3), weights=None, segmentName="next")
    with pytest.raises(TrainerError):
        sprintiface.exit()


def test_input_errors_and_config_errors(mlp_path):
    with pytest.raises(ProtocolError, match="before init"):
        sprintiface.feedInputUnsupervised(features=rasr_features(3), weights=None, segmentName="x")
    with pytest.raises(ConfigError, match="'action' is required"):
        rasr_init("", "target-alignment")
    with pytest.raises(ConfigError, match="action forward needs target-mode criterion-by-sprint or forward-only"):
        rasr_init(f"action:forward,onnx:{mlp_path}", "target-alignment")
    with pytest.raises(ConfigError, match="targetMode: expected one of"):
        rasr_init("action:nop", "supervised")
    with pytest.raises(ConfigError, match="trainer 'dump' needs config key 'dump_file'"):
        rasr_init("action:train", "target-alignment")
    with pytest.raises(ConfigError, match=r"cannot load 'nowhere.module:make'"):
        rasr_init("action:train,trainer:nowhere.module:make", "target-alignment")
    rasr_init("action:nop", "target-alignment")
    with pytest.raises(FeatureError, match=r"expected features of shape \(inputDim=12, T\), got \(13, 4\)"):
        sprintiface.feedInputAndTargetAlignment(features=rasr_features(4, dim=13),
                                                targetAlignment=numpy.zeros(4, numpy.uint32),
                                                weights=None, segmentName="x")
    with pytest.raises(FeatureError, match="alignment of 4 frames, got shape"):
        sprintiface.feedInputAndTargetAlignment(features=rasr_features(4), targetAlignment=numpy.zeros(3, numpy.uint32),
                                                weights=None, segmentName="x")
    with pytest.raises(FeatureError, match=r"alignment class 30 at frame 2 is outside \[0, outputDim=30\)"):
        sprintiface.feedInputAndTargetAlignment(features=rasr_features(4),
                                                targetAlignment=numpy.array([0, 1, 30, 2], numpy.uint32),
                                                weights=None, segmentName="x")
    posteriors = sprintiface.feedInput(features=rasr_features(4), weights=None, segmentName="x")  # nop: uniform
    numpy.testing.assert_allclose(posteriors, 1 / 30)
    sprintiface.finishDiscard()
    assert sprintiface._training().session.segments == 1


def test_features_to_dataset_and_module_surface():
    features = rasr_features(5)
    dataset, seq_idx = sprintiface.features_to_dataset(features=features, segment_name="x/1")
    assert dataset.num_seqs == 1 and dataset.get_tag(seq_idx) == "x/1"
    assert dataset.get_seq_length(seq_idx) == {"data": 5}
    numpy.testing.assert_array_equal(dataset.get_data(seq_idx, "data"), features.T)
    assert sprintiface.make_criterion_class().__name__ == "Trainer"
    assert set(sprintiface.dump_flags()) >= {"OMP_NUM_THREADS"}
    sprintiface.set_target_mode("forward-only")
    with pytest.raises(ConfigError):
        sprintiface.set_target_mode("nonsense")


def _planned_epochs(config, names):
    """(name, epoch) of every segment the segment order plans, from its schedule."""
    list(sprintiface.getSegmentList(corpusName="c", segmentList=names, segmentsInfo=None, config=config))
    schedule = sprintiface._training().schedule
    return [(name, epoch) for epoch in range(schedule.first, schedule.last + 1)
            for name in schedule.epoch_segments(epoch)]


@pytest.mark.parametrize("read_ahead, keep", [(0, 1), (1, 1), (3, 1), (0, 2), (2, 3)])
def test_epochs_come_from_the_schedule_not_from_counting(read_ahead, keep):
    # RASR reading names ahead, or feeding one corpus partition of several (its
    # partition filter sits after the ordering), must not shift an epoch.
    config = "action:train,trainer:recording_trainer:make,num_epochs:3,queue_size:0,seq_ordering:random,seed:3"
    names = [f"c/s{i}" for i in range(7)]
    planned = _planned_epochs(config, names)
    generator = iter(sprintiface.getSegmentList(corpusName="c", segmentList=names, segmentsInfo=None,
                                                config=config))
    handed, expected = [], []
    rasr_init(config, "target-alignment")
    for index in range(len(planned)):
        # RASR has asked for `read_ahead` more names than it has fed
        while len(handed) < min(len(planned), index + 1 + read_ahead):
            handed.append(next(generator))
        if index % keep:
            continue  # another process's partition
        expected.append(planned[index])
        sprintiface.feedInputAndTargetAlignment(features=rasr_features(2), targetAlignment=numpy.zeros(2, numpy.uint32),
                                                weights=None, segmentName=handed[index])
    list(generator)
    sprintiface.exit()
    assert [(c[1], c[3]) for c in recording_trainer.CALLS if c[0] == "train_segment"] == expected
    assert [c for c in recording_trainer.CALLS if c[0] in ("start_epoch", "end_epoch")] == [
        (hook, epoch) for epoch in (1, 2, 3) for hook in ("start_epoch", "end_epoch")]


def test_criterion_by_sprint_dumps_every_segment_with_rasrs_error(tmp_path, mlp_path):
    dump = tmp_path / "crit.hdf"
    rasr_init(f"action:train,trainer:dump,dump_file:{dump},onnx:{mlp_path}", "criterion-by-sprint")
    fed = []
    for index in range(4):
        features = rasr_features(5 + index, seed=index)
        weights = numpy.full(5 + index, 0.5, numpy.float32) if index == 1 else None
        posteriors = sprintiface.feedInput(features=features, weights=weights, segmentName=f"s{index}")
        numpy.testing.assert_allclose(posteriors, bare_run(mlp_path, numpy.ascontiguousarray(features.T)).T,
                                      rtol=1e-5, atol=1e-7)
        if index == 2:
            sprintiface.finishDiscard()
        else:
            sprintiface.finishError(error=10.0 + index, errorSignal=numpy.asfortranarray(posteriors),
                                    naturalPairingType="softmax")
        fed.append(features.T.copy())
    sprintiface.feedInput(features=rasr_features(3, seed=9), weights=None, segmentName="s4")  # exit() comes first
    sprintiface.exit()
    data = read_dump(dump)
    assert data["tags"] == ["s0", "s1", "s2", "s3", "s4"] and data["attrs"]["numSeqs"] == 5
    numpy.testing.assert_array_equal(data["inputs"][:26], numpy.concatenate(fed))
    assert data["keys"] == ["loss", "weights"] and data["size"]["loss"] == [1, 1]
    numpy.testing.assert_array_equal(data["targets"]["loss"], [10.0, 11.0, 13.0])  # none for discarded s2, s4
    assert data["lengths"].tolist() == [[5, 1, 0], [6, 1, 6], [7, 0, 0], [8, 1, 0], [3, 0, 0]]


def test_forward_only_dumps_every_segment_and_needs_a_model(tmp_path, mlp_path):
    dump = tmp_path / "fwd.hdf"
    with pytest.raises(ConfigError, match=r"trainer 'dump' in target mode forward-only returns posteriors.*onnx"):
        rasr_init(f"action:train,dump_file:{dump}", "forward-only")
    with pytest.raises(ConfigError, match=r"criterion-by-sprint.*needs a model"):
        rasr_init(f"action:train,dump_file:{dump}", "criterion-by-sprint")
    assert not [name for name in os.listdir(tmp_path) if name.startswith("fwd")]  # checked before creating any
    rasr_init(f"action:train,dump_file:{dump},onnx:{mlp_path}", "forward-only")
    features = rasr_features(7)
    posteriors = sprintiface.feedInputForwarding(features=features, weights=None, segmentName="f0")
    assert posteriors.shape == (30, 7) and posteriors.flags.f_contiguous
    sprintiface.exit()
    data = read_dump(dump)
    assert data["tags"] == ["f0"] and data["keys"] == ["weights"]
    numpy.testing.assert_array_equal(data["inputs"], features.T)


@pytest.mark.parametrize("flag, allowed", [(0, False), (1, True), (False, False), (True, True)])
def test_allow_downsampling_comes_as_an_int(flag, allowed):
    sprintiface.init(inputDim=12, outputDim=30, allowDownsampling=flag, config="action:nop",
                     targetMode="forward-only", cudaEnabled=0, cudaActiveGpu=-1)
    assert sprintiface._training().session.allow_downsampling is allowed


@pytest.mark.parametrize("flag", [2, -1, "1", None, 1.0])
def test_allow_downsampling_other_values_are_refused(flag):
    with pytest.raises(ProtocolError, match="expected allowDownsampling to be 0 or 1"):
        sprintiface.init(inputDim=12, outputDim=30, allowDownsampling=flag, config="action:nop",
                         targetMode="forward-only", cudaEnabled=0, cudaActiveGpu=-1)


@pytest.mark.parametrize("queue_size", [0, 4])
def test_trainers_own_their_arrays_when_rasr_reuses_its_buffers(queue_size):
    rasr_init(f"action:train,trainer:recording_trainer:make,queue_size:{queue_size}", "target-generic")
    features = rasr_features(6)
    alignment = numpy.arange(6, dtype=numpy.uint32)
    weights = numpy.full(6, 0.5, numpy.float32)
    expected = []
    for index in range(5):
        features[:] = index  # RASR fills the same buffers for every segment
        alignment[:] = index
        weights[:] = index
        sprintiface.feedInputAndTarget(features=features, weights=weights, segmentName=f"s{index}",
                                       alignment=alignment, orthography="a ", speaker_name=None, speaker_gender=None)
        expected.append(index)
    features[:] = -1
    alignment[:] = 0
    weights[:] = -1
    sprintiface.exit()
    kept = [segment for segment, _ in recording_trainer.KEPT]
    assert [s.name for s in kept] == [f"s{i}" for i in range(5)]
    for value, segment in zip(expected, kept):
        assert (segment.features == value).all() and segment.features.flags.c_contiguous
        assert (segment.alignment == value).all() and (segment.weights == value).all()


def test_the_error_signal_is_the_trainers_own(mlp_path):
    rasr_init(f"action:train,trainer:recording_trainer:make,onnx:{mlp_path}", "criterion-by-sprint")
    signal = numpy.asfortranarray(numpy.full((30, 4), 0.25, numpy.float32))
    sprintiface.feedInput(features=rasr_features(4), weights=None, segmentName="s")
    sprintiface.finishError(error=1.0, errorSignal=signal, naturalPairingType="softmax")
    signal[:] = 7.0
    _, kept = recording_trainer.KEPT[-1]
    assert kept.shape == (4, 30) and (kept == 0.25).all()


def test_rejected_input_names_the_segment_and_what_was_expected():
    rasr_init("action:nop", "target-alignment")
    features = rasr_features(4)
    features[2, 3] = numpy.nan
    alignment = numpy.zeros(4, numpy.uint32)
    with pytest.raises(FeatureError,
                       match=r"segment 'x': features are not finite at frame 3, dimension 2 \(value nan\)"):
        sprintiface.feedInputAndTargetAlignment(features=features, targetAlignment=alignment, weights=None,
                                                segmentName="x")
    with pytest.raises(FeatureError, match=r"expected float32 weights of shape \(4,\) or None, got int64 \(4,\)"):
        sprintiface.feedInputAndTargetAlignment(features=rasr_features(4), targetAlignment=alignment,
                                                weights=numpy.ones(4, numpy.int64), segmentName="x")
    with pytest.raises(FeatureError, match=r"weights are not finite at frame 1 \(value inf\)"):
        sprintiface.feedInputAndTargetAlignment(features=rasr_features(4), targetAlignment=alignment,
                                                weights=numpy.array([1, numpy.inf, 1, 1], numpy.float32),
                                                segmentName="x")
    # C order is the same (inputDim, T) matrix: accepted
    sprintiface.feedInputAndTargetAlignment(features=numpy.ascontiguousarray(rasr_features(4)),
                                            targetAlignment=alignment, weights=None, segmentName="c")


LOGGED_JOB = textwrap.dedent("""
    import sys, numpy, sprintiface
    level, mode, model = sys.argv[1], sys.argv[2], sys.argv[3]
    names = ["c/a", "c/b", "c/c"]
    config = f"action:train,dump_file:{sys.argv[4]},onnx:{model},num_epochs:2,log_level:{level}"
    order = sprintiface.getSegmentList(corpusName="c", segmentList=names,
                                       segmentsInfo={n: {"time": 0.1 * (i + 1)} for i, n in enumerate(names)},
                                       config=config + ",seq_ordering:sorted")
    for index, name in enumerate(order):
        if index == 0:
            sprintiface.init(inputDim=12, outputDim=30, allowDownsampling=0, config=config, targetMode=mode,
                             cudaEnabled=0, cudaActiveGpu=-1)
        features = numpy.asfortranarray(numpy.ones((12, 5 + index), numpy.float32))
        if mode == "unsupervised":
            sprintiface.feedInputUnsupervised(features=features, weights=None, segmentName=name)
        else:
            posteriors = sprintiface.feedInput(features=features, weights=None, segmentName=name)
            sprintiface.finishError(error=1.5, errorSignal=numpy.asfortranarray(posteriors), naturalPairingType=None)
    sprintiface.exit()
""")


@pytest.mark.parametrize("mode", ["unsupervised", "criterion-by-sprint"])
def test_nn_trainer_runs_print_a_line_per_segment_at_info_and_nothing_at_warning(tmp_path, mlp_path, mode):
    def run(level):
        result = subprocess.run([sys.executable, "-c", LOGGED_JOB, level, mode, mlp_path, str(tmp_path / "d.hdf")],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stderr.splitlines()

    lines = run("info")
    assert all(line.startswith("sprintiface: ") for line in lines)
    assert "sprintiface: segment order sorted: lengths from segmentsInfo's 'time' (x 100 frames per second)" in lines
    assert any(line.startswith("sprintiface: segment order for corpus 'c': 3 segments, epochs 1..2") for line in lines)
    segments = [line for line in lines if line.startswith("sprintiface: segment ") and "frames," in line]
    what = "to trainer DumpTrainer" if mode == "unsupervised" else "error 1.5"
    assert segments == [f"sprintiface: segment {i + 1} {name!r}, epoch {i // 3 + 1}: {5 + i} frames, {what}"
                        for i, name in enumerate(["c/a", "c/b", "c/c"] * 2)]
    assert "sprintiface: epoch 1 ends (3 segments fed in this session)" in lines
    assert any("dump: 6 segments, 45 frames written to" in line for line in lines)
    assert run("warning") == []


@pytest.mark.parametrize("queue_size", [0, 4])
def test_a_failed_feed_is_recorded_and_the_dump_never_gets_its_final_name(tmp_path, queue_size):
    dump = tmp_path / "d.hdf"
    rasr_init(f"action:train,dump_file:{dump},queue_size:{queue_size}", "target-segment-orth")

    def feed(name, orthography):
        sprintiface.feedInputAndTargetSegmentOrth(features=rasr_features(3), targetSegmentOrth=orthography,
                                                  weights=None, segmentName=name)

    feed("s0", "fine ")
    feed("s1", "also fine ")
    with pytest.raises(TrainerError, match=r"(?s)failed.*UnicodeEncodeError"):
        feed("s2", "bad \ud800 ")  # a lone surrogate has no UTF-8: the dump's hook fails
        sprintiface._training().session._queue.join()  # queued: the failure comes at the next call
        feed("s3", "next ")
    with pytest.raises(TrainerError):  # the caller went on to exit(): the failure again, no final name
        sprintiface.exit()
    assert sorted(os.listdir(tmp_path)) == ["d.hdf.partial"]
    assert read_dump(f"{dump}.partial")["tags"] == ["s0", "s1"]


def test_feed_input_forwarding_in_criterion_by_sprint_would_lose_the_segment(tmp_path, mlp_path):
    rasr_init(f"action:train,dump_file:{tmp_path / 'd.hdf'},onnx:{mlp_path}", "criterion-by-sprint")
    with pytest.raises(ProtocolError, match=r"criterion-by-sprint takes feedInput.*not feedInputForwarding"):
        sprintiface.feedInputForwarding(features=rasr_features(3), weights=None, segmentName="s")


def test_every_process_goes_through_every_epoch_of_the_schedule():
    # A process whose corpus partition has nothing in the first and the last epochs (one
    # segment per epoch, this process's only in epoch 2) still starts and ends them all,
    # so that trainers of several processes meet at every epoch end.
    config = "action:train,trainer:recording_trainer:make,num_epochs:3,partition_epoch:3,queue_size:0"
    names = ["c/s0", "c/s1", "c/s2"]
    for name in sprintiface.getSegmentList(corpusName="c", segmentList=names, segmentsInfo=None, config=config):
        if name != "c/s1":
            continue  # another process's partition
        rasr_init(config, "target-alignment")
        sprintiface.feedInputAndTargetAlignment(features=rasr_features(2), targetAlignment=numpy.zeros(2, numpy.uint32),
                                                weights=None, segmentName=name)
    sprintiface.exit()
    assert [c[:2] for c in recording_trainer.CALLS] == [
        ("start_epoch", 1), ("end_epoch", 1), ("start_epoch", 2), ("train_segment", "c/s1"), ("end_epoch", 2),
        ("start_epoch", 3), ("end_epoch", 3), ("finish",)]


TORCH_FREE = textwrap.dedent("""
    import sys, numpy, sprintiface
    from sprintiface.rasr_calls import rasr_scorer_calls
    config = ("action:train,trainer:torch,model_file:am.py,model:out/am,learning_rate:0.001,max_seqs:8,max_frames:2000,"
              "accum_grad_multiple_step:2,torch_threads:1,onnx_exporter:torchscript,num_epochs:3")
    # RASR passes the trainer's config to the segment ordering too
    assert len(list(sprintiface.getSegmentList(corpusName="c", segmentList=["a", "b"], segmentsInfo=None,
                                               config=config))) == 6
    frames = numpy.zeros((5, 12), numpy.float32)
    assert [s.shape for _, s in rasr_scorer_calls(sprintiface, "onnx:" + sys.argv[1], [frames], 12, 30)] == [(5, 30)]
    assert "torch" not in sys.modules, "scoring imported torch"
    print("ok")
""")


def test_import_segment_order_and_scoring_never_import_torch(tmp_path, mlp_path):
    result = subprocess.run([sys.executable, "-c", TORCH_FREE, mlp_path], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


WITHOUT_TORCH = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # as if PyTorch were not installed
    import sprintiface
    try:
        sprintiface.init(inputDim=12, outputDim=6, allowDownsampling=0, targetMode="target-alignment",
                         config="action:train,trainer:torch,model_file:am.py,model:out/am", cudaEnabled=0,
                         cudaActiveGpu=-1)
    except sprintiface.ConfigError as error:
        print(error)
""")


def test_trainer_torch_without_torch_says_how_to_install_it(tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert "cannot load 'torch'" in result.stdout and "pip install 'sprintiface[torch]'" in result.stdout, \
        result.stdout + result.stderr
