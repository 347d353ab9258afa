"""trainer:torch's mini-batches are sorted longest first, so a model may pack them with
``pack_padded_sequence(enforce_sorted=True)`` (i6-models' BLSTM does).

Needs PyTorch; CI runs it with ``pytest -m torch``.
"""
import json
import textwrap

import numpy
import pytest
from conftest import end_training_session

import sprintiface
from sprintiface.demos import synthetic_segment

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

INPUT_DIM, CLASSES = 12, 6

#: Packs with enforce_sorted=True (torch raises on unsorted lengths) and records every batch's
#: lengths in training, so the test sees what the trainer handed it.
SORTED_BLSTM_FILE = textwrap.dedent(f"""
    import json
    import os

    import torch

    LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lengths.jsonl")


    class SortedBLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM({INPUT_DIM}, 8, bidirectional=True, batch_first=True)
            self.out = torch.nn.Linear(16, {CLASSES})

        def forward(self, features, lengths):
            if self.training:
                with open(LOG, "a") as log:
                    log.write(json.dumps(lengths.tolist()) + "\\n")
            packed = torch.nn.utils.rnn.pack_padded_sequence(features, lengths.cpu().long(), batch_first=True,
                                                             enforce_sorted=True)
            hidden, _ = self.lstm(packed)
            hidden, _ = torch.nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True,
                                                               total_length=features.shape[1])
            return self.out(hidden)


    def get_model(epoch):
        torch.manual_seed(0)
        return SortedBLSTM()
""")


@pytest.fixture(autouse=True)
def clean_session():
    yield
    end_training_session()


def test_collate_sorts_longest_first_and_moves_each_row_with_its_segment():
    from sprintiface.training.protocol import Segment
    from sprintiface.training.torch_trainer import collate

    lengths = (3, 7, 5, 7, 1)
    segments = [Segment(name=f"s{i}", features=numpy.full((count, 2), i, numpy.float32), epoch=1,
                        alignment=numpy.full(count, i, numpy.uint32)) for i, count in enumerate(lengths)]
    batch = collate(segments, torch.device("cpu"))
    assert batch.lengths.tolist() == [7, 7, 5, 3, 1]
    assert [segment.name for segment in batch.segments] == ["s1", "s3", "s2", "s0", "s4"]  # ties as fed
    for row, segment in enumerate(batch.segments):
        index, count = int(segment.name[1:]), segment.num_frames
        assert batch.features[row, :count].eq(index).all() and batch.features[row, count:].eq(0).all()
        assert batch.alignment[row, :count].eq(index).all() and batch.mask[row].sum() == count


def test_a_model_packing_with_enforce_sorted_trains_through_rasrs_calls(tmp_path):
    model_file = tmp_path / "am.py"
    model_file.write_text(SORTED_BLSTM_FILE)
    prefix = tmp_path / "out" / "am"
    config = (f"action:train,trainer:torch,model_file:{model_file},model:{prefix},num_epochs:1,max_seqs:4,"
              f"torch_threads:1,log_level:warning")
    names = [f"s{i}" for i in range(8)]
    fed = []
    for index, name in enumerate(sprintiface.getSegmentList(corpusName="train", segmentList=names,
                                                            segmentsInfo=None, config=config)):
        features, labels = synthetic_segment(name, INPUT_DIM, CLASSES)
        fed.append(features.shape[0])
        if index == 0:
            sprintiface.init(inputDim=INPUT_DIM, outputDim=CLASSES, allowDownsampling=0, config=config,
                             targetMode="target-alignment", cudaEnabled=0, cudaActiveGpu=-1)
        sprintiface.feedInputAndTargetAlignment(features=numpy.asfortranarray(features.T), targetAlignment=labels,
                                                weights=None, segmentName=name)
    sprintiface.exit()
    batches = [json.loads(line) for line in (tmp_path / "lengths.jsonl").read_text().splitlines()]
    assert [length for batch in batches for length in batch] == sorted(fed[:4], reverse=True) + sorted(
        fed[4:], reverse=True)
    assert fed[:4] != sorted(fed[:4], reverse=True) or fed[4:] != sorted(fed[4:], reverse=True)  # sorting was needed
    assert (tmp_path / "out" / "am.001.onnx").exists()  # the checked export packs sorted batches too
