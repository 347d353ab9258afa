"""getSegmentList as RASR calls it: orderings, partitions, epochs, resume, repeat calls."""
import pytest

import sprintiface
from sprintiface import ConfigError, ProtocolError

NAMES = [f"corpus/seg-{i}" for i in range(23)]
INFO = {name: {"nframes": (i * 37) % 101 + 1, "time": 0.1} for i, name in enumerate(NAMES)}


def segment_list(config, info=INFO, names=NAMES):
    return list(sprintiface.getSegmentList(corpusName="corpus", segmentList=list(names), segmentsInfo=info,
                                           config=config))


def epochs(config, num_epochs):
    """The generator's output split into epochs, by the schedule the segment order made."""
    names = list(sprintiface.getSegmentList(corpusName="corpus", segmentList=NAMES, segmentsInfo=INFO,
                                            config=config))
    schedule = sprintiface._training().schedule
    result = {epoch: schedule.epoch_segments(epoch) for epoch in range(schedule.first, schedule.last + 1)}
    assert [name for part in result.values() for name in part] == names
    assert sorted(result) == list(range(min(result), num_epochs + 1))
    return result


def test_default_order_over_epochs():
    assert segment_list("num_epochs:3") == NAMES * 3


def test_random_is_seeded_per_epoch_and_deterministic():
    by_epoch = epochs("num_epochs:3,seq_ordering:random,seed:5", 3)
    assert all(sorted(names) == sorted(NAMES) for names in by_epoch.values())
    assert by_epoch[1] != by_epoch[2] != by_epoch[3]
    in_order = [name for part in by_epoch.values() for name in part]
    assert segment_list("num_epochs:3,seq_ordering:random,seed:5") == in_order
    assert segment_list("num_epochs:1,seq_ordering:random,seed:6") != by_epoch[1]


def test_sorted_orders_by_nframes():
    lengths = [INFO[name]["nframes"] for name in segment_list("seq_ordering:sorted")]
    assert lengths == sorted(lengths)
    lengths = [INFO[name]["nframes"] for name in segment_list("seq_ordering:sorted_reverse")]
    assert lengths == sorted(lengths, reverse=True)


def test_laplace_bins_are_sorted_alternately():
    names = segment_list("seq_ordering:laplace:5,seed:1")
    assert sorted(names) == sorted(NAMES)
    lengths = [INFO[name]["nframes"] for name in names]
    bins = [lengths[i:i + 5] for i in range(0, len(lengths), 5)]
    for number, values in enumerate(bins):
        assert values == sorted(values, reverse=bool(number % 2))


def test_partition_epoch_covers_the_corpus_once_per_pass():
    by_epoch = epochs("num_epochs:6,partition_epoch:3,seq_ordering:random", 6)
    first_pass = by_epoch[1] + by_epoch[2] + by_epoch[3]
    assert sorted(first_pass) == sorted(NAMES)
    assert sorted(by_epoch[4] + by_epoch[5] + by_epoch[6]) == sorted(NAMES)
    assert all(7 <= len(by_epoch[e]) <= 8 for e in by_epoch)


def test_resume_starts_after_the_last_finished_epoch(tmp_path):
    (tmp_path / "epoch.001.done").write_text("{}")
    (tmp_path / "epoch.002.done").write_text("{}")
    by_epoch = epochs(f"num_epochs:4,checkpoint_dir:{tmp_path}", 4)
    assert sorted(by_epoch) == [3, 4]
    assert segment_list(f"num_epochs:4,start_epoch:4,checkpoint_dir:{tmp_path}") == NAMES


def test_counting_call_changes_nothing():
    config = "num_epochs:2,seq_ordering:random"
    first = segment_list(config)
    assert segment_list(config) == first  # RASR may run it once just to count


def test_errors_at_the_call():
    with pytest.raises(ConfigError, match=r"needs segment lengths.*python-segment-order-with-segment-info"):
        sprintiface.getSegmentList(corpusName="c", segmentList=NAMES, segmentsInfo=None, config="seq_ordering:sorted")
    with pytest.raises(ConfigError, match=r"'seq_ordering'.*laplace:N"):
        sprintiface.getSegmentList(corpusName="c", segmentList=NAMES, segmentsInfo=None, config="seq_ordering:shuffle")


@pytest.mark.parametrize("info, message", [
    ({"x": {}}, r"length of segment 'corpus/seg-0', but segmentsInfo has no entry for it; expected a dict "
                r"with 'time' \(seconds\) or 'nframes'"),
    ({name: {"speaker": "a"} for name in NAMES},
     r"segmentsInfo\['corpus/seg-0'\] has neither 'nframes' nor 'time' \(got keys \['speaker'\]\)"),
    ({name: {"time": "1.5"} for name in NAMES}, r"segmentsInfo\['corpus/seg-0'\]\['time'\] is '1.5'; expected a "
                                                r"finite number >= 0"),
    ({name: {"time": float("nan")} for name in NAMES}, r"\['time'\] is nan; expected a finite number"),
    ({name: {"nframes": True} for name in NAMES}, r"\['nframes'\] is True; expected a finite number"),
    ({name: {"time": -1.0} for name in NAMES}, r"\['time'\] is -1.0"),
    ({name: 3.2 for name in NAMES}, r"segment 'corpus/seg-0', but segmentsInfo has a float for it"),
])
def test_a_bad_segments_info_entry_names_the_segment_and_what_was_expected(info, message):
    for ordering in ("sorted", "sorted_reverse", "laplace:4"):
        with pytest.raises(ConfigError, match=message):
            sprintiface.getSegmentList(corpusName="c", segmentList=NAMES, segmentsInfo=info,
                                       config=f"seq_ordering:{ordering}")


def test_protocol_errors_for_what_rasr_never_passes():
    with pytest.raises(ProtocolError, match=r"expected segmentsInfo to be a dict.*got list"):
        sprintiface.getSegmentList(corpusName="c", segmentList=NAMES, segmentsInfo=[1], config="seq_ordering:sorted")
    with pytest.raises(ProtocolError, match="expected segmentList to be a list of segment names, got NoneType"):
        sprintiface.getSegmentList(corpusName="c", segmentList=None, segmentsInfo=None, config="")
    with pytest.raises(ProtocolError, match=r"hold segment names \(str\), got 3 \(int\)"):
        sprintiface.getSegmentList(corpusName="c", segmentList=["a", 3], segmentsInfo=None, config="")
    with pytest.raises(ProtocolError, match="expected config to be the python-segment-order-config string, got int"):
        sprintiface.getSegmentList(corpusName="c", segmentList=["a"], segmentsInfo=None, config=123)


# What RASR passes without use-data-source = true: "time" (seconds) only.
TIME_ONLY = {name: {"time": ((i * 37) % 101 + 1) / 100} for i, name in enumerate(NAMES)}


@pytest.mark.parametrize("ordering", ["sorted", "sorted_reverse", "laplace:5"])
def test_orderings_work_from_time_alone_like_from_nframes(ordering):
    # INFO's nframes are TIME_ONLY's times at 100 frames per second: the same order
    config = f"seq_ordering:{ordering},seed:3,num_epochs:2"
    assert segment_list(config, info=TIME_ONLY) == segment_list(config, info=INFO)
    times = [TIME_ONLY[name]["time"] for name in segment_list(f"seq_ordering:{ordering}", info=TIME_ONLY)]
    if ordering == "sorted":
        assert times == sorted(times)
    elif ordering == "sorted_reverse":
        assert times == sorted(times, reverse=True)


def test_nframes_wins_when_every_entry_has_it_else_time():
    # nframes and time disagree: nframes orders when all have it...
    info = {name: {"nframes": i, "time": 1.0 / (i + 1)} for i, name in enumerate(NAMES)}
    assert segment_list("seq_ordering:sorted", info=info) == NAMES
    # ...time (x 100) as soon as one lacks it; an entry without time keeps its nframes
    info[NAMES[0]] = {"time": 0.5}
    info[NAMES[1]] = {"nframes": 10_000}
    order = segment_list("seq_ordering:sorted", info=info)
    assert order[-1] == NAMES[1] and order.index(NAMES[0]) > order.index(NAMES[2])


def test_get_final_epoch_reads_the_config():
    segment_list("num_epochs:7")
    assert sprintiface.get_final_epoch() == 7
