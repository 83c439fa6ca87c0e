"""The fused ring through a real ``CupySession`` on the CPU: the session's program fuses the
``ring_attention`` region with the cupy fusions, and the ring runs with the cupy backend's own
parts (CupyDevice, CupyStreams, NcclTransport, KernelBlockOps) over stand-ins: NumPy for CuPy,
no-op streams and events, an NCCL communicator per rank whose grouped send/recv move blocks
between the threads of an InProcessWorld (group-local peers, as NCCL's), and the kernels' float64
references in place of the Triton kernels. Checked against float64 attention of the whole
sequence; the GPU run of the same path is gpu/check_ring.py.
"""

from __future__ import annotations

import contextlib
import threading
import types

import numpy as np
import pytest
from trtdsl.kernels import attention as kernels
from trtdsl.kernels import reference

import trtdsl as td
from trtdsl import parallel as P
from trtdsl.backends.cupy import device
from trtdsl.backends.interpreter import RunContext
from trtdsl.backends.session_cupy import CupySession
from trtdsl.worlds import World


class Stream:
    def __init__(self, ptr: int) -> None:
        self.ptr = ptr

    def record(self, event=None):
        return event

    def wait_event(self, event) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def fake_cupy() -> types.SimpleNamespace:
    ns = {n: getattr(np, n) for n in dir(np) if not n.startswith("_")}
    default = Stream(0)
    ns["cuda"] = types.SimpleNamespace(
        Event=lambda block=False, disable_timing=False: object(),
        Stream=lambda non_blocking=False: Stream(99),
        get_current_stream=lambda: default,
    )
    ns["asnumpy"] = lambda v, stream=None: np.array(v)
    return types.SimpleNamespace(**ns)


class Mailboxes:
    """Blocks in flight between ranks: (source, destination, sequence number) -> array."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.boxes: dict[tuple, np.ndarray] = {}

    def put(self, key, value) -> None:
        with self.cond:
            self.boxes[key] = value.copy()
            self.cond.notify_all()

    def take(self, key) -> np.ndarray:
        with self.cond:
            assert self.cond.wait_for(lambda: key in self.boxes, timeout=20), f"no block {key}"
            return self.boxes.pop(key)


class FakeComm:
    """One rank's NCCL communicator of its group: ``send``/``recv`` are queued inside
    ``group()`` and run at its end (sends first, so no rank blocks another)."""

    def __init__(self, boxes: Mailboxes, members: tuple, rank: int) -> None:
        self.boxes, self.members = boxes, members
        self.rank, self.size = members.index(rank), len(members)
        self.pending: list | None = None
        self.seq: dict[tuple, int] = {}
        self.ops: list[tuple] = []

    def prepare(self, op, dtype, reduce=None, root=None):
        def call(*args):
            raise AssertionError(f"the fused ring must not run the graph's {op}")

        return call

    def async_error(self):
        return None

    @contextlib.contextmanager
    def group(self):
        assert self.pending is None, "nested NCCL group"
        self.pending = []
        yield
        ops, self.pending = self.pending, None
        for kind, buf, count, peer in sorted(ops, key=lambda o: o[0] != "send"):
            src, dst = (self.rank, peer) if kind == "send" else (peer, self.rank)
            n = self.seq.get((kind, src, dst), 0)
            self.seq[(kind, src, dst)] = n + 1
            key = (self.members, src, dst, n)
            if kind == "send":
                self.boxes.put(key, buf.reshape(-1)[:count])
            else:
                buf.reshape(-1)[:count] = self.boxes.take(key)

    def send(self, buf, count, dtype, peer, stream):
        assert self.pending is not None and buf.dtype == dtype and stream == 99
        self.pending.append(("send", buf, count, peer))
        self.ops.append(("send", peer))

    def recv(self, buf, count, dtype, peer, stream):
        assert self.pending is not None and buf.dtype == dtype and stream == 99
        assert buf.flags.c_contiguous
        self.pending.append(("recv", buf, count, peer))
        self.ops.append(("recv", peer))


class FakeNcclWorld(World):
    """A rank of an InProcessWorld with NCCL communicators per group partition."""

    def __init__(self, inner, boxes: Mailboxes) -> None:
        self.inner, self.boxes = inner, boxes
        self.size, self.rank = inner.size, inner.rank
        self.comms: dict[tuple, FakeComm] = {}

    def exchange(self, obj, what, key=None):
        return self.inner.exchange(obj, what, key)

    def communicator(self, spec):
        if spec.partition not in self.comms:
            self.comms[spec.partition] = FakeComm(self.boxes, spec.group, self.rank)
        return self.comms[spec.partition]

    def abort_communicators(self) -> int:
        return 0


class Ctx(RunContext):
    use_kernels = True

    def __init__(self, network, feeds, world) -> None:
        super().__init__(network, feeds, world)
        self.xp = device.cupy_module()


@pytest.fixture
def stand_ins(monkeypatch):
    calls = {"flash": 0, "merge": 0, "into": 0}

    def flash(q, k, v, *, scale, causal, q_offset, k_offset, return_lse):
        calls["flash"] += 1
        dtype = q.dtype
        q, k, v = (a.astype(np.float64) for a in (q, k, v))
        o, lse = reference.attention(q, k, v, scale, causal, q_offset, k_offset)
        return o.astype(dtype), lse.astype(np.float32)

    def merge(o1, l1, o2, l2, *, inplace):
        assert inplace and o1.dtype == o2.dtype == np.float32
        calls["merge"] += 1
        o, lse = reference.merge(o1, l1, o2, l2)
        o1[...], l1[...] = o, lse
        return o1, l1

    def flash_into(q, k, v, o_acc, lse_acc, *, scale, causal, q_offset, k_offset, first):
        assert o_acc.dtype == lse_acc.dtype == np.float32 and o_acc.shape == q.shape
        calls["into"] += 1
        q, k, v = (a.astype(np.float64) for a in (q, k, v))
        o, lse = reference.attention(q, k, v, scale, causal, q_offset, k_offset)
        if not first:
            o, lse = reference.merge(o_acc, lse_acc, o, lse)
        o_acc[...], lse_acc[...] = o, lse
        return o_acc, lse_acc

    monkeypatch.setattr(device, "cupy_module", fake_cupy)
    monkeypatch.setattr(kernels, "flash_attention", flash)
    monkeypatch.setattr(kernels, "merge_attention", merge)
    monkeypatch.setattr(kernels, "flash_attention_into", flash_into)
    return calls


def ref_attention(q, k, v, causal):
    s = np.einsum("hqd,hkd->hqk", q, k) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("hqk,hkd->hqd", p / p.sum(-1, keepdims=True), v)


@pytest.mark.parametrize(
    "n,groups,layout,causal,dtype,d",
    [
        (2, None, "contiguous", False, "float16", 32),  # kernels (stand-ins)
        (3, None, "zigzag", True, "bfloat16", 64),
        (4, [[0, 1], [2, 3]], "zigzag", True, "float16", 32),
        (4, [[3, 1], [0, 2]], "contiguous", True, "float32", 32),  # float32: array ops
        (2, None, "zigzag", True, "float16", 16),  # not a kernel head dim: array ops
    ],
)
def test_cupy_session_runs_the_ring(stand_ins, n, groups, layout, causal, dtype, d):
    boxes = Mailboxes()
    gsize = n if groups is None else len(groups[0])
    heads, s_local = 2, 4
    seqs = [
        [np.random.default_rng(g).standard_normal((heads, s_local * gsize, d)).astype(dtype)
         for _ in "qkv"]
        for g in range(n // gsize)
    ]  # fmt: skip

    def rank_fn(inner):
        world = FakeNcclWorld(inner, boxes)
        part = [list(range(n))] if groups is None else groups
        g = next(i for i, grp in enumerate(part) if world.rank in grp)
        idx = part[g].index(world.rank)
        net = td.Network("ring", world=world)
        ins = [net.input(nm, (heads, s_local, d), dtype) for nm in "qkv"]
        out = P.cp_attention(*ins, strategy="ring", causal=causal, layout=layout, groups=groups)
        net.output(out, "o")
        feeds = {
            nm: P.shard_sequence(a, idx, gsize, axis=1, layout=layout)
            for nm, a in zip("qkv", seqs[g])
        }
        s = CupySession(net, Ctx, agree=True, nccl_timeout=None)
        assert [lay.op.name for lay, *_ in s.program.steps].count("fused_ring_attention") == 1
        outs = [s.run(feeds)["o"] for _ in range(2)]  # a new signature (agree), then known
        s.close()
        comm = world.comms[net.collectives[0].spec.partition]
        return g, idx, outs, comm.ops

    results = td.InProcessWorld(n).run(rank_fn)
    for g in range(n // gsize):
        mine = sorted((idx, outs, ops) for gg, idx, outs, ops in results if gg == g)
        want = ref_attention(*(a.astype(np.float64) for a in seqs[g]), causal)
        for call in range(2):
            got = P.unshard([outs[call] for _, outs, _ in mine], axis=1, layout=layout)
            assert got.dtype == np.dtype(dtype)
            tol = 1e-4 if dtype == "float32" else 2e-2
            np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)
        for idx, _, ops in mine:  # per call: N-1 exchanges with the group's neighbours
            step = [("send", (idx + 1) % gsize), ("recv", (idx - 1) % gsize)]
            assert ops == step * (2 * (gsize - 1))
    kernel_dim = d in (32, 64, 128, 256)  # the merge kernel takes float32 too
    # fp16/bf16: the kernel accumulates the blocks itself; float32: array ops + merge kernel
    assert (stand_ins["into"] > 0) == (kernel_dim and dtype != "float32")
    assert stand_ins["flash"] == 0
    assert (stand_ins["merge"] > 0) == (kernel_dim and dtype == "float32")
