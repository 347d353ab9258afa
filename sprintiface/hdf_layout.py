"""RETURNN's HDFDataset layout: the names of its datasets and attributes, in one place.

The dump trainer (:mod:`sprintiface.training.dump`) writes this layout and
:mod:`sprintiface.feature_files` reads it; RETURNN's ``HDFDataset`` reads it too.

- ``inputs``: float32 (total frames, input_dim), the segments one after another;
- ``seqTags``: one UTF-8 segment name per segment;
- ``seqLengths``: int32 (segments, 1 + number of target keys): frames of the
  inputs, then the length of each target, keys in sorted order;
- ``targets/data/<key>``: each target's values, concatenated;
- ``targets/size``: an attribute per key, int32 ``[dim, ndim]``;
- ``targets/labels/<key>``: the key's label names (empty: none);
- file attributes ``inputPattSize`` (input_dim), ``numSeqs`` and ``numTimesteps``.
"""

INPUTS = "inputs"
SEQ_TAGS = "seqTags"
SEQ_LENGTHS = "seqLengths"
TARGETS_DATA = "targets/data"
TARGETS_SIZE = "targets/size"
TARGETS_LABELS = "targets/labels"

INPUT_PATT_SIZE = "inputPattSize"
NUM_SEQS = "numSeqs"
NUM_TIMESTEPS = "numTimesteps"


def target_data(key: str) -> str:
    """The dataset that holds target ``key``'s values: ``targets/data/<key>``."""
    return f"{TARGETS_DATA}/{key}"
