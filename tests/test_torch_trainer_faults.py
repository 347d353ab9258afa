"""trainer:torch when something goes wrong (issue 13): a process of a distributed run that never
starts, a NaN or infinity from RASR's criterion or from training itself, and a job restarted
with the same config after it was killed. Real torch, real processes, RASR's calls.

Needs PyTorch (pip install 'sprintiface[torch]'); CI runs these with ``pytest -m torch``.
"""
import os
import subprocess
import sys
import textwrap

import numpy
import pytest
from conftest import end_training_session

import sprintiface
from sprintiface import TrainerError
from sprintiface.demos import TORCH_DEMO_MODEL_FILE, synthetic_segment

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

INPUT_DIM, CLASSES = 12, 6
MLP_FILE = TORCH_DEMO_MODEL_FILE.format(input_dim=INPUT_DIM, classes=CLASSES)
DROPOUT_FILE = MLP_FILE.replace("torch.nn.ReLU(),", "torch.nn.ReLU(), torch.nn.Dropout(0.2),")
NAMES = [f"train/{i}" for i in range(10)]


@pytest.fixture(autouse=True)
def clean_session():
    yield
    end_training_session()


def write(tmp_path, text, name="am.py"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def fortran(features):
    return numpy.asfortranarray(features.T)


def checkpoint(prefix, epoch):
    return torch.load(f"{prefix}.{epoch:03d}.pt", weights_only=True)


#: RASR's nn-trainer with python-segment-order as one process: getSegmentList, init with this
#: process's first segment (RASR's partition filter sits after the ordering), one
#: feedInputAndTargetAlignment per segment, exit(). argv: config, the partition (segment numbers,
#: "" for none, "all"), the index of the segment at which the process is killed (-1: never).
RASR_JOB = textwrap.dedent("""
    import json, os, sys, numpy, sprintiface
    from sprintiface.demos import synthetic_segment
    config, partition, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])
    names = ["train/%d" % i for i in range(10)]
    mine = None if partition == "all" else set(partition.split(","))
    trainer = None
    for index, name in enumerate(sprintiface.getSegmentList(corpusName="train", segmentList=names,
                                                            segmentsInfo=None, config=config)):
        if index == stop:
            os._exit(1)  # killed: no exit(), no atexit
        if mine is not None and name.split("/")[1] not in mine:
            continue
        features, labels = synthetic_segment(name, 12, 6)
        if trainer is None:
            sprintiface.init(inputDim=12, outputDim=6, allowDownsampling=0, config=config,
                             targetMode="target-alignment", cudaEnabled=0, cudaActiveGpu=-1)
            trainer = sprintiface._training().session.trainer
        sprintiface.feedInputAndTargetAlignment(features=numpy.asfortranarray(features.T), targetAlignment=labels,
                                                weights=None, segmentName=name)
    sprintiface.exit()
    print(json.dumps({"started": trainer is not None, "steps": trainer.step if trainer else None}))
""")


def rasr_job(config, partition="all", stop=-1, env=None, cwd=None):
    return subprocess.Popen([sys.executable, "-c", RASR_JOB, config, partition, str(stop)], cwd=cwd,
                            env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(process, timeout=300):
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return process.returncode, out, err


# -- a process of a distributed run that never starts ------------------------------------

def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("world_size, missing", [(3, 1), (2, 0)])
def test_a_process_whose_partition_has_no_segment_stops_the_others_with_its_rank(tmp_path, world_size, missing):
    # The missing process's partition is empty: RASR runs its segment list, never calls init, calls
    # exit(). Without a bound the others would wait for it for gloo's 30 minutes.
    model_file = write(tmp_path, MLP_FILE)
    config = f"action:train,trainer:torch,model_file:{model_file},model:{tmp_path / 'out' / 'am'},num_epochs:2," \
             f"max_seqs:2,torch_threads:1,distributed_timeout:15,log_level:info"
    port = _free_port()
    present = [rank for rank in range(world_size) if rank != missing]
    partitions = {rank: ",".join(str(i) for i in range(10) if i % len(present) == place)
                  for place, rank in enumerate(present)}
    processes = {}
    for rank in range(world_size):
        env = dict(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        processes[rank] = rasr_job(config, partitions.get(rank, ""), env=env, cwd=tmp_path)
    results = {rank: finished(process) for rank, process in processes.items()}
    code, out, err = results[missing]
    assert code == 0 and '"started": false' in out, err  # fed nothing, so it never trained: not an error there
    for rank, (code, out, err) in results.items():
        if rank == missing:
            continue
        assert code != 0, out
        assert "sprintiface.errors.TrainerError" in err, err
        assert f"torch trainer process {rank} of {world_size}: process {missing} of {world_size} did not start " \
               f"its trainer within distributed_timeout 15 s" in err, err
        assert f"the corpus partition of process {missing} most likely has no segment. Give every process " \
               f"segments" in err, err
    assert not (tmp_path / "out").exists()


# -- NaN and infinity ----------------------------------------------------------------------

def _criterion_segment(tmp_path, prefix):
    config = f"action:train,trainer:torch,model_file:{write(tmp_path, MLP_FILE)},model:{prefix},torch_threads:1," \
             f"queue_size:0,log_level:warning"
    features, labels = synthetic_segment("corpus/one", INPUT_DIM, CLASSES)
    sprintiface.init(inputDim=INPUT_DIM, outputDim=CLASSES, allowDownsampling=0, config=config,
                     targetMode="criterion-by-sprint", cudaEnabled=0, cudaActiveGpu=-1)
    posteriors = sprintiface.feedInput(features=fortran(features), weights=None, segmentName="corpus/one")
    signal = posteriors.copy()
    signal[labels, numpy.arange(labels.shape[0])] -= 1.0
    return numpy.asfortranarray(signal, numpy.float32)


def test_a_nan_in_rasrs_error_signal_is_refused_at_finish_error(tmp_path):
    prefix = tmp_path / "am"
    signal = _criterion_segment(tmp_path, prefix)
    signal[2, 3] = numpy.nan  # (outputDim, T): class 2 of frame 3
    with pytest.raises(TrainerError, match=r"finishError for segment 'corpus/one': RASR's errorSignal is not "
                                           r"finite at frame 3, class 2 \(value nan; 1 of \d+ values"):
        sprintiface.finishError(error=1.5, errorSignal=signal, naturalPairingType="softmax")
    with pytest.raises(TrainerError):  # the run cannot complete: RASR's exit() says so again
        sprintiface.exit()
    assert os.listdir(tmp_path) == ["am.py"]  # no checkpoint, no export

    signal = _criterion_segment(tmp_path, prefix)
    with pytest.raises(TrainerError, match=r"finishError for segment 'corpus/one': RASR's error is inf; "
                                           r"expected a finite number"):
        sprintiface.finishError(error=float("inf"), errorSignal=signal, naturalPairingType=None)
    with pytest.raises(TrainerError):
        sprintiface.exit()
    assert os.listdir(tmp_path) == ["am.py"]


def _files(folder):
    return sorted(name for name in os.listdir(folder) if not name.endswith(".py"))


def test_a_model_that_diverges_leaves_no_checkpoint_and_no_export(tmp_path):
    # A loss scaled up and a learning rate that blows up: the loss is finite, the epoch's one SGD
    # step (at its end) makes weights infinite.
    diverging = write(tmp_path, MLP_FILE + textwrap.dedent("""

        def get_optimizer(model, learning_rate):
            return torch.optim.SGD(model.parameters(), lr=learning_rate)


        def train_step(model, batch):
            logits = model(batch.features, batch.lengths)
            return 1e10 * torch.nn.functional.cross_entropy(logits[batch.mask], batch.alignment[batch.mask])
    """))
    config = f"action:train,trainer:torch,model_file:{diverging},model:{tmp_path / 'am'},num_epochs:2,max_seqs:32," \
             f"learning_rate:1e30,torch_threads:1,queue_size:0,log_level:warning"
    names = iter(sprintiface.getSegmentList(corpusName="train", segmentList=NAMES[:3], segmentsInfo=None,
                                            config=config))
    sprintiface.init(inputDim=INPUT_DIM, outputDim=CLASSES, allowDownsampling=0, config=config,
                     targetMode="target-alignment", cudaEnabled=0, cudaActiveGpu=-1)
    for _ in range(3):  # epoch 1: one mini-batch, trained at the epoch's end
        name = next(names)
        features, labels = synthetic_segment(name, INPUT_DIM, CLASSES)
        sprintiface.feedInputAndTargetAlignment(features=fortran(features), targetAlignment=labels, weights=None,
                                                segmentName=name)
    name = next(names)  # epoch 2's first segment ends epoch 1
    features, labels = synthetic_segment(name, INPUT_DIM, CLASSES)
    with pytest.raises(TrainerError, match=r"(?s)the model is not finite after epoch 1 \(neither .*am.001.pt nor "
                                           r".*am.001.onnx is written\): parameter '[^']+': \d+ of its \d+ values "
                                           r".* are not finite.*Training diverged: lower learning_rate"):
        sprintiface.feedInputAndTargetAlignment(features=fortran(features), targetAlignment=labels, weights=None,
                                                segmentName=name)
    with pytest.raises(TrainerError):
        sprintiface.exit()
    assert _files(tmp_path) == []  # nothing under a final name, no temporary either

    # a train_step whose loss is NaN is refused at once, naming the mini-batch's segments
    end_training_session()  # (another job: no segment order)
    nan_loss = write(tmp_path, MLP_FILE + textwrap.dedent("""

        def train_step(model, batch):
            logits = model(batch.features, batch.lengths)
            return logits.sum() * float("nan")
    """), "nan_loss.py")
    config = f"action:train,trainer:torch,model_file:{nan_loss},model:{tmp_path / 'am'},max_seqs:2,torch_threads:1," \
             f"queue_size:0,log_level:warning"
    sprintiface.init(inputDim=INPUT_DIM, outputDim=CLASSES, allowDownsampling=0, config=config,
                     targetMode="unsupervised", cudaEnabled=0, cudaActiveGpu=-1)
    sprintiface.feedInputUnsupervised(features=fortran(features), weights=None, segmentName="a")
    with pytest.raises(TrainerError, match=r"(?s)train_step\(\) in model_file '.*nan_loss.py' returned the loss nan "
                                           r"for the mini-batch of segments 'a', 'b' \(epoch 1"):
        sprintiface.feedInputUnsupervised(features=fortran(features), weights=None, segmentName="b")
    with pytest.raises(TrainerError):
        sprintiface.exit()
    assert _files(tmp_path) == []


# -- a restarted job continues after its last complete epoch ------------------------------

def _stat(path):
    info = os.stat(path)
    with open(path, "rb") as file:
        return info.st_mtime_ns, info.st_size, file.read()


def test_a_restarted_job_continues_after_its_last_complete_epoch_without_extra_keys(tmp_path):
    from sprintiface._files import _HOST

    model_file = write(tmp_path, DROPOUT_FILE)

    def config(folder):  # no checkpoint_dir, no start_epoch
        return f"action:train,trainer:torch,model_file:{model_file},model:{tmp_path / folder / 'am'},num_epochs:4," \
               f"seq_ordering:random,max_seqs:3,torch_threads:1,log_level:info"

    def files(folder):
        return sorted(os.listdir(tmp_path / folder))

    def all_files(epochs):
        return sorted(f"am.{e:03d}.{x}" for e in epochs for x in ("pt", "onnx"))

    straight = rasr_job(config("straight"), cwd=tmp_path)
    # killed in epoch 3 (after 25 of 40 segments): epochs 1 and 2 are written, epoch 3 is half-done
    killed = rasr_job(config("resumed"), stop=25, cwd=tmp_path)
    code, _, err = finished(killed)
    assert code == 1 and files("resumed") == all_files((1, 2)), err
    before = {name: _stat(tmp_path / "resumed" / name) for name in files("resumed")}
    # ... and as if a later attempt had been killed between epoch 3's two files: its .pt was renamed into
    # place, its .onnx was being written (a temporary of a process that is gone)
    code, out, err = finished(straight)
    assert code == 0, err
    (tmp_path / "resumed" / "am.003.pt").write_bytes((tmp_path / "straight" / "am.003.pt").read_bytes())
    leftover = tmp_path / "resumed" / f"am.003.onnx.{_HOST}.{killed.pid}.x1y2z3.tmp"
    leftover.write_bytes(b"half an onnx file")
    stale = _stat(tmp_path / "resumed" / "am.003.pt")

    # the segment order and the trainer agree: epochs 3 and 4
    assert len(list(sprintiface.getSegmentList(corpusName="train", segmentList=NAMES, segmentsInfo=None,
                                               config=config("resumed")))) == 20
    end_training_session()
    code, out, err = finished(rasr_job(config("resumed"), cwd=tmp_path))  # the identical config
    assert code == 0, err
    assert f"torch trainer: resumed from {tmp_path / 'resumed' / 'am.002.pt'} (after epoch 2, 8 optimizer steps)" \
        in err, err
    assert files("resumed") == all_files((1, 2, 3, 4))
    assert {name: _stat(tmp_path / "resumed" / name) for name in before} == before  # untouched
    assert _stat(tmp_path / "resumed" / "am.003.pt")[0] != stale[0]  # redone
    for epoch in (3, 4):
        expected, resumed = checkpoint(tmp_path / "straight" / "am", epoch), checkpoint(tmp_path / "resumed" / "am",
                                                                                        epoch)
        assert resumed["step"] == expected["step"] == 4 * epoch  # 4 mini-batches per epoch
        for key, value in expected["model"].items():
            assert torch.equal(resumed["model"][key], value), (epoch, key)
        for index, state in expected["optimizer"]["state"].items():
            assert float(resumed["optimizer"]["state"][index]["step"]) == 4 * epoch  # Adam's count continued
            for key, value in state.items():
                assert torch.equal(resumed["optimizer"]["state"][index][key], value), (epoch, index, key)

    # every epoch done: the same config again trains nothing and writes nothing
    done = {name: _stat(tmp_path / "resumed" / name) for name in files("resumed")}
    code, out, err = finished(rasr_job(config("resumed"), cwd=tmp_path))
    assert code == 0 and '"started": false' in out, err
    assert "epochs 1..4 are finished" in err and "nothing to train, the segment list is empty" in err, err
    assert {name: _stat(tmp_path / "resumed" / name) for name in files("resumed")} == done


def test_the_segment_order_starts_after_the_last_epoch_with_both_files(tmp_path):
    (tmp_path / "out").mkdir()
    for name in ("am.001.pt", "am.001.onnx", "am.002.pt", "am.002.onnx", "am.003.pt", "am.004.onnx"):
        (tmp_path / "out" / name).write_bytes(b"x")
    base = f"action:train,trainer:torch,model_file:am.py,model:{tmp_path / 'out' / 'am'},num_epochs:5"

    def first(config):
        names = list(sprintiface.getSegmentList(corpusName="train", segmentList=NAMES, segmentsInfo=None,
                                                config=config))
        schedule = sprintiface._training().schedule
        assert len(names) == len(NAMES) * (schedule.last - schedule.first + 1)
        return schedule.first

    assert first(base) == 3  # epoch 3 has no .onnx, epoch 4 no .pt: both are redone
    assert first(base + ",start_epoch:2") == 2
    assert first(base + f",checkpoint_dir:{tmp_path / 'marks'}") == 1  # markers decide there: none yet
    assert first(base.replace("trainer:torch", "trainer:dump")) == 1
    assert first(base.replace("action:train", "action:nop")) == 1
