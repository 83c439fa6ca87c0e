"""Launching without MPI (and finding the world under MPI): ``td.world_from_env``.

- Real jobs of 1-4 rank processes started as torchrun, srun or TensorRT's sample would start
  them (tests/launch_helper.py: a free port from the OS, a random job token, every process
  killed at the end): every collective on the numpy backend against NumPy, a mismatch, a rank
  that raises, dies, never arrives or hangs, a stray connection with a wrong token. Nothing may
  hang: each job has a time limit far above what it needs.
- Unit tests of the message framing and of the environment's order and overrides.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import pytest
from launch_helper import base_env, free_port, launch, show
from mpi_jobs import MPIEXEC, OPEN_MPI_ENV

import trtdsl as td
from trtdsl.worlds import detect_launch, wire
from trtdsl.worlds.env import detect_launcher, first_host, job_token
from trtdsl.worlds.rendezvous import read_message

# -- whole jobs -------------------------------------------------------------------------------
COLLECTIVES = """
w = td.world_from_env(timeout=20)
n, r = w.size, w.rank
assert w.local_rank == r, (w.local_rank, r)
red = {"sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod, "avg": np.mean}
cases = [("all_reduce", "sum", None), ("all_reduce", "max", None), ("all_reduce", "avg", None),
         ("broadcast", None, n - 1), ("reduce", "sum", 0), ("reduce", "min", n - 1),
         ("all_gather", None, None), ("reduce_scatter", "sum", None),
         ("reduce_scatter", "prod", None), ("all_to_all", None, None), ("gather", None, 0),
         ("gather", None, n - 1), ("scatter", None, 0), ("scatter", None, n - 1)]
checked = 0
for dtype in ("float32", "int32"):
    for op, reduce, root in cases:
        if dtype == "int32" and reduce in ("avg", "prod"):
            continue
        rows = 2 * n
        xs = [(np.random.default_rng([k, 7]).standard_normal((rows, 3)) * 4).astype(dtype)
              for k in range(n)]
        net = td.Network(f"{op}_{reduce}_{root}", world=w)
        y = net.input("x", (rows, 3), dtype).collective(op, reduce=reduce, root=root)
        net.output(y, "y")
        got = net.run({"x": xs[r]})["y"]
        c = rows // n
        total = red[reduce](np.stack(xs), axis=0).astype(dtype) if reduce else None
        want = {
            "all_reduce": total, "reduce": total if r == root else None,
            "broadcast": xs[root if root is not None else 0], "all_gather": np.concatenate(xs),
            "gather": np.concatenate(xs) if r == root else None,
            "reduce_scatter": None if total is None else total[r * c:(r + 1) * c],
            "scatter": xs[root][r * c:(r + 1) * c] if root is not None else None,
            "all_to_all": np.concatenate([x[r * c:(r + 1) * c] for x in xs]),
        }[op]
        if want is not None:
            assert got.shape == want.shape and np.allclose(got, want, rtol=1e-5), (op, reduce)
            checked += 1
w.exchange(b"\\x00\\xff" * 64, "bytes (an NCCL unique id)")  # bytes travel as plain data
print(f"rank {r} of {n} ({type(w).__name__}, {w.launcher}): {checked} collectives OK")
"""

JOBS = [("torchrun", 4), ("torchrun", 2), ("slurm", 3), ("trt", 2), ("trt", 3), ("trt-tcp", 2)]


@pytest.mark.parametrize("style,size", JOBS, ids=[f"{s}-{n}" for s, n in JOBS])
def test_every_collective_against_numpy(tmp_path, style, size):
    results = launch(tmp_path, COLLECTIVES, size, style, limit=60)
    for res in results:
        assert res.returncode == 0, show(results)
        assert f"rank {res.rank} of {size} (" in res.out and "collectives OK" in res.out
    kind = "FileWorld" if style == "trt" else "SocketWorld"
    assert all(kind in res.out for res in results), show(results)
    if style == "trt":
        assert not list(tmp_path.glob("nccl.id*")), "rank 0 removes the id file at the end"


@pytest.mark.parametrize("style", ["torchrun", "slurm", "trt"])
def test_one_rank(tmp_path, style):
    body = "w = td.world_from_env()\nprint(type(w).__name__, w.size, w.rank, w.exchange(1, 'x'))"
    (res,) = launch(tmp_path, body, 1, style, limit=30)
    assert res.returncode == 0 and "StaticWorld 1 0 [1]" in res.out, res.out


def test_no_launcher_is_one_rank(tmp_path):
    (res,) = launch(tmp_path, "print(td.world_from_env())", 1, "torchrun", limit=30,
                    extra_env={0: {"RANK": "", "WORLD_SIZE": ""}})  # fmt: skip
    assert "RANK=''" in res.out or res.returncode != 0  # empty RANK is not an integer
    p = subprocess.run(
        [sys.executable, "-c", "import trtdsl as td; print(td.world_from_env())"],
        env=base_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert p.stdout.strip() == "StaticWorld(size=1, rank=0)", p.stdout + p.stderr


FAILURES = """
w = td.world_from_env(timeout={timeout})
net = td.Network("n", world=w)
net.output(net.input("x", (4,)).{op}, "y")
{before}
try:
    net.run({{"x": np.ones(4, "float32")}})
except td.TrtDslError as e:
    print(f"CAUGHT {{type(e).__name__}}: {{e}}")
    sys.exit(3)
print("RAN")
"""


def failing(timeout=20, op='all_reduce("sum")', before=""):
    return FAILURES.format(timeout=timeout, op=op, before=before)


@pytest.mark.parametrize("style,size", [("torchrun", 3), ("trt", 2)])
def test_mismatch_fails_on_every_rank(tmp_path, style, size):
    body = failing(
        before="if w.rank == 1:\n    net = td.Network('m', world=w)\n"
        "    net.output(net.input('x', (4,)).all_gather(), 'y')"
    )
    t = time.monotonic()
    results = launch(tmp_path, body, size, style, limit=60)
    assert time.monotonic() - t < 20, show(results)
    for res in results:
        assert res.returncode == 3, show(results)
        assert "CAUGHT CollectiveMismatchError" in res.out, show(results)
        assert "rank 1: all_gather()" in res.out, show(results)


@pytest.mark.parametrize("style", ["torchrun", "slurm", "trt"])
def test_rank_that_raises_is_named(tmp_path, style):
    body = failing(before="if w.rank == 1:\n    raise RuntimeError('bad input on rank 1')")
    t = time.monotonic()
    results = launch(tmp_path, body, 3, style, limit=60)
    assert time.monotonic() - t < 15, show(results)  # the notice, not the 20 s timeout
    assert results[1].returncode == 1 and "RuntimeError: bad input on rank 1" in results[1].out
    for res in (results[0], results[2]):
        assert res.returncode == 3, show(results)
        assert (
            "CAUGHT RankFailedError: rank "
            f"{res.rank} stopped waiting at collective check before running the network: "
            "rank 1 raised RuntimeError: bad input on rank 1"
        ) in res.out, show(results)


@pytest.mark.parametrize("dead", [0, 2])
def test_rank_that_dies_is_named(tmp_path, dead):
    body = failing(before=f"if w.rank == {dead}:\n    os._exit(7)")
    t = time.monotonic()
    results = launch(tmp_path, body, 3, "torchrun", limit=60)
    assert time.monotonic() - t < 15, show(results)
    assert results[dead].returncode == 7
    for res in results:
        if res.rank != dead:
            assert res.returncode == 3, show(results)
            assert f"rank {dead} died: its connection closed" in res.out, show(results)


def test_rank_that_dies_on_the_file_channel_times_out_naming_it(tmp_path):
    body = failing(timeout=2, before="if w.rank == 1:\n    os._exit(7)")
    results = launch(tmp_path, body, 2, "trt", limit=60)
    assert results[0].returncode == 3, show(results)
    assert "waited more than 2 s at collective check" in results[0].out
    assert "rank 1 did not get there" in results[0].out


@pytest.mark.parametrize("style,missing", [("torchrun", 2), ("torchrun", 0), ("trt", 2)])
def test_rank_that_never_arrives(tmp_path, style, missing):
    ranks = [r for r in range(3) if r != missing]
    t = time.monotonic()
    results = launch(tmp_path, failing(timeout=2), 3, style, limit=60, ranks=ranks)
    assert time.monotonic() - t < 15, show(results)
    for res in results:
        assert res.returncode not in (0, None), show(results)
        assert "RendezvousError" in res.out, show(results)
    if missing == 0:
        assert "could not reach rank 0 at 127.0.0.1:" in results[0].out, show(results)
    else:
        assert f"rank {missing} did not" in results[0].out, show(results)
        assert f"rank {missing} did not" in results[1].out, show(results)


@pytest.mark.parametrize("style", ["torchrun", "trt"])
def test_rank_that_hangs_is_named(tmp_path, style):
    body = failing(timeout=2, before="if w.rank == 2:\n    time.sleep(60)")
    t = time.monotonic()
    results = launch(tmp_path, body, 3, style, limit=7)  # then the hanging rank is killed
    assert time.monotonic() - t < 11, show(results)
    for res in results[:2]:
        assert res.returncode == 3, show(results)
        assert "rank 2 did not get" in res.out, show(results)
    assert results[2].returncode is None  # killed by the launcher's limit


def test_stray_connections_are_refused(tmp_path):
    body = """
    from trtdsl.worlds import RendezvousError, SocketWorld
    import socket
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]) + 1
    if int(os.environ["RANK"]) == 1:
        time.sleep(0.3)
        try:
            SocketWorld(1, 2, addr, port, token="not-the-job-token", timeout=5,
                        notify_on_exception=False)
        except RendezvousError as e:
            print("STRAY:", e)
        s = socket.create_connection((addr, port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\\r\\n\\r\\n")
        print("HTTP:", s.recv(200)[:4])
    w = td.world_from_env(timeout=20)
    print("JOINED", w.exchange(w.rank, "x"))
    """
    results = launch(tmp_path, body, 2, "torchrun", limit=60)
    assert all(r.returncode == 0 for r in results), show(results)
    out0, out1 = results[0].out, results[1].out
    assert "STRAY: rank 1: rank 0 at 127.0.0.1:" in out1
    assert "refused the connection: wrong job token" in out1
    assert "HTTP: b'TDSL'" in out1  # a framed refusal, nothing else
    assert "rank 0 refused a connection from 127.0.0.1:" in out0
    assert "not a trtdsl message" in out0
    assert "JOINED [0, 1]" in out0 and "JOINED [0, 1]" in out1


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")
def test_under_mpiexec_it_is_an_mpi_world(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "import trtdsl as td\nw = td.world_from_env()\n"
        "print(type(w).__name__, w.rank, w.size, w.local_rank, w.launcher)\n"
    )
    env = {
        **base_env(),
        **OPEN_MPI_ENV,
        "RANK": "5",  # a stray torchrun variable: MPI comes first
        "WORLD_SIZE": "9",
    }
    p = subprocess.run(
        [MPIEXEC, "-n", "2", "--oversubscribe", sys.executable, str(script)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(p.stdout.split("\n")[:2]) == ["MPIWorld 0 2 0 mpi", "MPIWorld 1 2 1 mpi"]


# -- message framing --------------------------------------------------------------------------
def roundtrip(obj):
    return wire.unpack(wire.pack({"kind": "x", "obj": obj}, "tok")[wire.HEADER.size :], "tok")[
        "obj"
    ]


def test_plain_data_roundtrips():
    fp = ("all_reduce", "sum", None, ((0, 1),), "float32", (4, None))
    obj = [("layer", "f.py:3", fp), {"a": 1, 2: (3,), (1, 2): b"\x00"}, 1.5, True, None]
    assert roundtrip(obj) == obj
    assert hash(roundtrip(fp)) == hash(fp)  # tuples stay tuples (fingerprints are hashed)
    for a in (
        np.arange(6, dtype=np.float16).reshape(2, 3),
        np.zeros((0, 4), np.int64),
        np.array([1.5, -2], ml_dtypes.bfloat16),
        np.array(True),
    ):
        b = roundtrip(a)
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(b, a)
    assert roundtrip(np.float32(2.5)) == np.float32(2.5) and type(roundtrip(np.int8(3))) is np.int8


@pytest.mark.parametrize("obj", [object(), np.array([object()]), {1, 2}, lambda: 0])
def test_only_plain_data_is_sent(obj):
    with pytest.raises(wire.WireError, match="cannot send"):
        wire.pack({"kind": "x", "obj": obj}, "tok")


def test_length_limit_is_checked_before_the_body_is_read():
    with pytest.raises(wire.WireError, match="over the limit of 100 bytes"):
        wire.pack({"kind": "x", "obj": "a" * 200}, "tok", limit=100)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(wire.HEADER.pack(wire.MAGIC, 1 << 40))  # announces 1 TiB, sends nothing
        b.settimeout(5)
        with pytest.raises(wire.WireError, match=r"message of 1099511627776 bytes is over"):
            read_message(b, "tok")


def test_bad_messages_are_refused():
    with pytest.raises(wire.WireError, match="not a trtdsl message"):
        wire.body_length(b"GET / HTTP/1")
    with pytest.raises(wire.WireError, match="not valid JSON"):
        wire.unpack(b"{not json", "tok")
    with pytest.raises(wire.WireError, match="not a JSON object with a 'kind'"):
        wire.unpack(b"[1, 2]", "tok")
    with pytest.raises(wire.WireError, match="bad dtype"):  # object arrays are never built
        wire.unpack(b'{"token":"tok","kind":"x","o":{"a":["|O",[1],"AAAAAAAAAAA="]}}', "tok")
    with pytest.raises(wire.WireError, match="does not match"):
        wire.unpack(b'{"token":"tok","kind":"x","o":{"a":["<f4",[2],"AAAAAA=="]}}', "tok")
    with pytest.raises(wire.WireError, match="bad value"):
        wire.unpack(b'{"token":"tok","kind":"x","o":{"__reduce__":"os.system"}}', "tok")


def test_wrong_token_is_refused():
    body = wire.pack({"kind": "hello", "rank": 1}, "other-job")[wire.HEADER.size :]
    with pytest.raises(wire.WrongTokenError, match="wrong job token"):
        wire.unpack(body, "tok")
    no_token = b'{"kind":"hello"}'
    with pytest.raises(wire.WrongTokenError):
        wire.unpack(no_token, "tok")
    assert wire.unpack(body, None, accept_any_token=True)["rank"] == 1
    assert struct.unpack(">4sQ", wire.pack({"kind": "k"}, "t")[:12])[0] == b"TDSL"


# -- the environment: order and overrides -----------------------------------------------------
TORCHRUN = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "abc"}  # fmt: skip
SLURM = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "1234",
         "SLURM_STEP_NODELIST": "gpu[07-08]"}  # fmt: skip
TRT = {"TRT_MY_RANK": "1", "TRT_WORLD_SIZE": "2", "TRT_NCCL_ID_FILE": "/shared/id"}


def test_order_mpi_torchrun_slurm_trt_single():
    assert detect_launcher({"OMPI_COMM_WORLD_SIZE": "2", **TORCHRUN, **SLURM, **TRT}) == "mpi"
    assert detect_launcher({"PMIX_RANK": "0"}) == "mpi"
    assert detect_launcher({**TORCHRUN, **SLURM, **TRT}) == "torchrun"
    assert detect_launcher({**SLURM, **TRT}) == "slurm"
    assert detect_launcher(TRT) == "trt"
    assert detect_launcher({}) == "single"
    assert detect_launcher({**TORCHRUN, "TRTDSL_LAUNCHER": "trt"}) == "trt"
    with pytest.raises(td.ExecutionError, match="TRTDSL_LAUNCHER='pbs'"):
        detect_launcher({"TRTDSL_LAUNCHER": "pbs"})


def test_torchrun_meets_next_to_its_store():
    info = detect_launch(TORCHRUN)
    assert (info.launcher, info.rank, info.size, info.local_rank) == ("torchrun", 1, 4, 1)
    assert (info.addr, info.port, info.channel) == ("10.0.0.1", 29501, "tcp")
    assert detect_launch({**TORCHRUN, "TRTDSL_PORT": "7000"}).port == 7000


def test_slurm_address_and_port_from_the_job():
    info = detect_launch(SLURM)
    assert (info.rank, info.size, info.local_rank) == (5, 8, 1)
    assert (info.addr, info.port) == ("gpu07", 20000 + 1234)
    info = detect_launch({**SLURM, "MASTER_ADDR": "head", "MASTER_PORT": "6000"})
    assert (info.addr, info.port) == ("head", 6000)
    assert first_host("n[1-3],m") == "n1" and first_host("solo") == "solo"


def test_trt_variables_use_the_file_unless_an_address_is_given():
    info = detect_launch(TRT)
    assert (info.rank, info.size, info.channel, info.id_file) == (1, 2, "file", "/shared/id")
    info = detect_launch({**TRT, "MASTER_ADDR": "h", "MASTER_PORT": "9"})
    assert (info.channel, info.addr, info.port, info.id_file) == ("tcp", "h", 9, None)


def test_arguments_override_the_environment():
    info = detect_launch(TORCHRUN, rank=3, size=8, local_rank=0, addr="127.0.0.1", port=5)
    assert (info.rank, info.size, info.local_rank, info.addr, info.port) == (
        3,
        8,
        0,
        "127.0.0.1",
        5,
    )
    assert detect_launch(TORCHRUN, launcher="single").size == 1
    assert detect_launch({}, size=2, rank=1, id_file="/x").channel == "file"
    assert detect_launch(TORCHRUN, token="secret").token == "secret"
    with pytest.raises(td.ExecutionError, match="rank 4 of world size 4"):
        detect_launch(TORCHRUN, rank=4)
    with pytest.raises(td.ExecutionError, match="need a place to meet"):
        detect_launch({"RANK": "0", "WORLD_SIZE": "2"})


def test_local_rank_and_tokens():
    assert detect_launch({**TRT, "OMPI_COMM_WORLD_LOCAL_RANK": "3"}).local_rank == 3
    assert detect_launch({**TRT, "MPI_LOCALRANKID": "2"}).local_rank == 2
    assert detect_launch(TRT).local_rank == 1  # no hint: the rank
    a = detect_launch(TORCHRUN).token
    assert a == detect_launch({**TORCHRUN, "RANK": "0"}).token  # the same for every rank
    assert a != detect_launch({**TORCHRUN, "TORCHELASTIC_RUN_ID": "other"}).token
    assert detect_launch({**TORCHRUN, "TRTDSL_JOB_TOKEN": "s3cret"}).token == "s3cret"
    assert job_token({}, "trt", "/f", 2) != job_token({}, "trt", "/f", 3)
    assert free_port() > 0
