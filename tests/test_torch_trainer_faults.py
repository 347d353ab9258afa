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
from sprintiface.replay import TORCH_DEMO_MODEL_FILE

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
    from sprintiface.replay import synthetic_segment
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
             f"max_seqs:2,torch_threads:1,distributed_timeout:10,log_level:info"
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
               f"its trainer within distributed_timeout 10 s" in err, err
        assert f"the corpus partition of process {missing} most likely has no segment. Give every process " \
               f"segments" in err, err
    assert not (tmp_path / "out").exists()
