"""Rank worlds: fingerprint agreement (first_mismatch), StaticWorld, and InProcessWorld's
fail-fast behaviour (exceptions propagate, mismatches fail on every rank, nobody waits
forever)."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

import trtdsl as td
from trtdsl.worlds import first_mismatch

ALL4 = ((0, 1, 2, 3),)
PAIRS = ((0, 1), (2, 3))


def fp(op="all_reduce", reduce="sum", root=None, partition=ALL4, dtype="float32", shape=(4,)):
    return (op, reduce, root, partition, dtype, shape)


def entry(name="c", line=1, **kw):
    return (name, f"model.py:{line}", fp(**kw))


# -- first_mismatch ------------------------------------------------------------------------
def test_agreeing_sequences():
    seq = [entry("a"), entry("b", op="all_gather", reduce=None)]
    assert first_mismatch([seq] * 4) is None
    assert first_mismatch([[], [], [], []]) is None
    assert first_mismatch([]) is None


def test_names_and_lines_may_differ():
    per_rank = [[entry(f"layer{r}", line=r)] for r in range(4)]
    assert first_mismatch(per_rank) is None


def test_first_differing_collective_is_named_with_the_ranks():
    same = entry("a")
    per_rank = [[same, entry("b")] for _ in range(4)]
    per_rank[2] = [same, entry("b2", line=9, op="all_gather", reduce=None)]
    msg = first_mismatch(per_rank)
    assert msg.startswith("ranks disagree on collective #1:")
    assert "ranks [0, 1, 3]: all_reduce(sum) of (4) float32 (layer 'b' at model.py:1)" in msg
    assert "rank 2: all_gather() of (4) float32 (layer 'b2' at model.py:9)" in msg


@pytest.mark.parametrize(
    "field, value, shown",
    [
        ("reduce", "max", "all_reduce(max)"),
        ("root", 1, "root=1"),
        ("partition", PAIRS, "groups=[[0, 1], [2, 3]]"),
        ("dtype", "float16", "float16"),
        ("shape", (8,), "of (8)"),
    ],
)
def test_every_fingerprint_field_counts(field, value, shown):
    per_rank = [[entry()] for _ in range(4)]
    per_rank[3] = [entry(**{field: value})]
    msg = first_mismatch(per_rank)
    assert msg is not None and "rank 3: " in msg and shown in msg


def test_differing_lengths():
    a, b = entry("a"), entry("b", op="broadcast", reduce=None, root=0)
    msg = first_mismatch([[a, b], [a], [a, b], [a, b]])
    assert "collective #1" in msg
    assert "rank 1: no collective (its sequence already ended)" in msg
    assert "ranks [0, 2, 3]: broadcast(root=0)" in msg
    # the longer sequence can be on any rank
    msg = first_mismatch([[a], [a], [a], [a, b]])
    assert "collective #1" in msg and "ranks [0, 1, 2]: no collective" in msg


def test_shapes_may_differ_between_groups_but_not_within_one():
    def e(shape, dtype="float32"):
        return entry(partition=PAIRS, shape=shape, dtype=dtype)

    assert first_mismatch([[e((4,))], [e((4,))], [e((6,))], [e((6,))]]) is None
    assert first_mismatch([[e((4,))], [e((4,))], [e((6,), "int32")], [e((6,), "int32")]]) is None
    msg = first_mismatch([[e((4,))], [e((4,))], [e((6,))], [e((2,))]])
    assert "collective #0" in msg and "rank 2: all_reduce(sum) of (6)" in msg
    assert "rank 3: all_reduce(sum) of (2)" in msg
    msg = first_mismatch([[e((4,))], [e((4,), "float16")], [e((6,))], [e((6,))]])
    assert "rank 1: all_reduce(sum) of (4) float16" in msg


def test_dynamic_dimensions_are_shown():
    per_rank = [[entry(shape=(None, 4))], [entry(shape=(2, 4))]]
    per_rank = [[("c", "m.py:1", fp(partition=((0, 1),), shape=s[0][2][5]))] for s in per_rank]
    msg = first_mismatch(per_rank)
    assert "(?, 4)" in msg and "(2, 4)" in msg


def test_partition_naming_missing_ranks_is_a_mismatch():
    assert first_mismatch([[entry()], [entry()]]) is not None  # partition of 4, two reports


# -- StaticWorld ---------------------------------------------------------------------------
def test_static_world():
    with pytest.raises(ValueError):
        td.StaticWorld(2, rank=2)
    assert td.StaticWorld(1).exchange("x", "step") == ["x"]
    with pytest.raises(td.ExecutionError, match="cannot communicate"):
        td.StaticWorld(2).exchange("x", "step")
    net = td.Network("n", world=td.StaticWorld(2))
    net.output(net.input("x", (2,)).all_reduce("sum"), "y")
    with pytest.raises(td.ExecutionError, match="cannot communicate"):
        net.run({"x": np.ones(2, "float32")})


# -- InProcessWorld ------------------------------------------------------------------------
def ar_net(world, op="all_reduce", shape=(2,)):
    net = td.Network("n", world=world)
    x = net.input("x", shape)
    net.output(x.all_reduce("sum") if op == "all_reduce" else x.all_gather(), "y")
    return net


def test_results_in_rank_order():
    assert td.InProcessWorld(3).run(lambda w, k: w.rank * k, 10) == [0, 10, 20]
    assert td.InProcessWorld(3).run(lambda w: w.exchange(w.rank, "s")) == [[0, 1, 2]] * 3


def test_rank_exception_propagates_and_others_stop():
    seen = {}

    def per_rank(world):
        if world.rank == 2:
            raise KeyError("broken on rank 2")
        try:
            return ar_net(world).run({"x": np.ones(2, "float32")})
        except td.RankFailedError as e:
            seen[world.rank] = str(e)
            raise

    t = time.monotonic()
    with pytest.raises(KeyError, match="broken on rank 2") as info:
        td.InProcessWorld(4, timeout=30).run(per_rank)
    assert time.monotonic() - t < 5
    assert "raised on rank 2 of an InProcessWorld(4) run" in "".join(info.value.__notes__)
    assert sorted(seen) == [0, 1, 3]
    assert all("rank 2 failed with KeyError" in m for m in seen.values())


def test_lowest_failing_rank_is_reported():
    def per_rank(world):
        raise ValueError(f"rank {world.rank}")

    with pytest.raises(ValueError, match="rank 0"):
        td.InProcessWorld(3).run(per_rank)


def test_mismatch_raises_on_every_rank():
    def per_rank(world):
        net = ar_net(world, "all_gather" if world.rank == 1 else "all_reduce")
        try:
            net.run({"x": np.ones(2, "float32")})
        except td.CollectiveMismatchError as e:
            return str(e)
        return None

    msgs = td.InProcessWorld(3).run(per_rank)
    for r, m in enumerate(msgs):
        assert m.startswith(f"rank {r}, before running the network: ranks disagree on collective")
        assert "ranks [0, 2]: all_reduce(sum)" in m and "rank 1: all_gather()" in m


def test_mismatch_in_sequence_length():
    def per_rank(world):
        net = td.Network("n", world=world)
        y = net.input("x", (4,)).all_reduce("sum")
        if world.rank == 0:
            y = y.all_reduce("max")
        net.output(y, "y")
        net.run({"x": np.ones(4, "float32")})

    with pytest.raises(td.CollectiveMismatchError, match=r"rank 1: no collective") as info:
        td.InProcessWorld(2).run(per_rank)
    assert "collective #1" in str(info.value)


def test_mismatch_is_raised_before_any_collective_runs():
    calls = []

    def per_rank(world):
        original = world.collective
        world.collective = lambda layer, x: calls.append(layer.name) or original(layer, x)
        ar_net(world, "all_gather" if world.rank else "all_reduce").run(
            {"x": np.ones(2, "float32")}
        )

    with pytest.raises(td.CollectiveMismatchError):
        td.InProcessWorld(2).run(per_rank)
    assert calls == []


def test_rank_returning_early_stops_the_others_at_once():
    def per_rank(world):
        if world.rank == 1:
            return "skipped"
        return ar_net(world).run({"x": np.ones(2, "float32")})

    t = time.monotonic()
    with pytest.raises(td.RankFailedError, match="rank 1 already returned"):
        td.InProcessWorld(3, timeout=30).run(per_rank)
    assert time.monotonic() - t < 5


def test_timeout_names_the_missing_rank():
    release = threading.Event()

    def per_rank(world):
        if world.rank == 2:
            release.wait(10)  # hangs outside any collective
            return None
        return ar_net(world).run({"x": np.ones(2, "float32")})

    t = time.monotonic()
    with pytest.raises(td.RankFailedError, match=r"waited more than 1 s at collective check") as e:
        td.InProcessWorld(3, timeout=1).run(per_rank)
    release.set()
    assert time.monotonic() - t < 8
    # rank 2 never came (under heavy load the other waiting rank may also be late)
    assert re.search(r"(rank 2|ranks \[\d, 2\]) did not get there", str(e.value)), e.value


def test_rank_stuck_outside_collectives_is_reported():
    release = threading.Event()

    def per_rank(world):
        if world.rank == 0:
            release.wait(10)

    with pytest.raises(td.RankFailedError, match=r"ranks \[0\] .* did not finish"):
        td.InProcessWorld(2, timeout=0.1).run(per_rank)
    release.set()


def test_exchanges_out_of_step_fail_together():
    def per_rank(world):
        try:
            world.exchange(1, f"step {world.rank}")
        except td.CollectiveMismatchError as e:
            return str(e)

    msgs = td.InProcessWorld(2).run(per_rank)
    assert all("out of step" in m and "rank 1 at step 1" in m for m in msgs)


def test_many_runs_in_a_row():
    def per_rank(world):
        net = ar_net(world)
        return [net.run({"x": np.full(2, i, "float32")})["y"][0] for i in range(50)]

    res = td.InProcessWorld(4).run(per_rank)
    assert res[0] == res[3] == [4.0 * i for i in range(50)]
