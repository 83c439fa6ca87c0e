"""The samples run and pass, and every code block of the user docs runs.

- Each sample in ``samples/`` as a subprocess with simulated ranks (1-4 ranks, every strategy /
  op / flag at small sizes) and a few under ``mpiexec -n 2`` (and one DiT run with 4
  processes): exit status 0 and a ``PASSED`` line.
- ``--backend tensorrt`` (TensorRT is not installed here) exits non-zero with TensorRT's
  message and no traceback; ``--backend cupy`` outside mpirun says to use mpirun.
- The ```python blocks of docs/getting-started.md and docs/dsl.md run in order, as one script
  per file; a block with ``# not run:`` is skipped, and one with ``# run under: mpiexec -n N``
  runs as a script under mpiexec.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trtdsl as td
from trtdsl import functional as F

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
DOCS = ROOT / "docs"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
MPI_VARS = ("OMPI_", "PMI", "PMIX_", "MPI_LOCALNRANKS", "PRTE_", "HYDRA_")


def _env(mpi: bool) -> dict[str, str]:
    # A plain run must not look like an MPI rank (this suite may itself run under mpiexec).
    env = {k: v for k, v in os.environ.items() if not k.startswith(MPI_VARS)}
    env["PYTHONUNBUFFERED"] = "1"
    if mpi:  # as in tools/run_tests.sh: root allowed, one host, shared memory only
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        env.setdefault("OMPI_MCA_btl", "self,sm")
        env.setdefault("OMPI_MCA_pml", "ob1")
        env.setdefault("OMPI_MCA_smsc", "^cma")
    return env


def run(args: list[str], mpi_ranks: int | None = None, timeout: float = 120):
    cmd = [sys.executable, *args]
    if mpi_ranks is not None:
        if not MPIEXEC.exists():
            pytest.skip(f"no mpiexec next to {sys.executable}")
        cmd = [str(MPIEXEC), "-n", str(mpi_ranks), "--oversubscribe", "--bind-to", "none", *cmd]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env=_env(mpi_ranks is not None),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_passed(p: subprocess.CompletedProcess, ranks: int) -> None:
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    last = [line for line in p.stdout.splitlines() if "PASSED" in line or "FAILED" in line]
    assert last and last[-1].endswith(": PASSED"), out
    assert f"over {ranks} rank" in last[-1], out


# -- simulated ranks -------------------------------------------------------------------------
def _collective_cases():
    for op in td.COLLECTIVE_OPS:
        for n in (1, 2, 3, 4):
            yield n, ["--op", op]
    for reduce in td.REDUCE_OPS:
        yield 3, ["--op", "all_reduce", "--reduce", reduce]
    yield 2, ["--op", "reduce_scatter", "--reduce", "avg"]
    yield 4, ["--op", "reduce_scatter", "--reduce", "max"]
    for op in ("broadcast", "reduce", "gather", "scatter"):
        yield 3, ["--op", op, "--root", "2", "--reduce", "min"]


def _cp_cases():
    flags = ([], ["--causal"], ["--q-chunk", "5"], ["--causal", "--q-chunk", "4"])
    for strategy in sorted(td.parallel.STRATEGIES):
        for n in (1, 2, 3, 4):
            yield n, ["--strategy", strategy, *flags[n - 1]]
        yield 4, ["--strategy", strategy]
        yield 4, ["--strategy", strategy, "--causal"]


CASES = (
    [("dist_collective.py", n, a) for n, a in _collective_cases()]
    + [
        ("tp_mlp.py", n, a)
        for n, a in [
            (1, []),
            (2, []),
            (3, ["--gated"]),
            (4, []),
            (4, ["--gated"]),
            (2, ["--reduce", "reduce_scatter"]),
            (3, ["--gated", "--reduce", "reduce_scatter"]),
            (4, ["--reduce", "reduce_scatter"]),
        ]
    ]
    + [("cp_attention.py", n, a) for n, a in _cp_cases()]
    + [
        ("dit_block.py", n, a)
        for n, a in [
            (1, ["--summary"]),
            (2, []),  # all ranks CP
            (2, ["--tp", "2", "--strategy", "ring"]),
            (3, ["--strategy", "ulysses"]),
            (3, ["--tp", "3"]),
            (4, []),
            (4, ["--strategy", "ring"]),
            (4, ["--strategy", "ulysses"]),
            (4, ["--tp", "4"]),
            (4, ["--cp", "2"]),  # tp = 2
            (4, ["--tp", "2", "--cp", "2", "--strategy", "allgather_kv"]),
            (4, ["--tp", "2", "--cp", "2", "--strategy", "ring"]),
            (4, ["--tp", "2", "--cp", "2", "--strategy", "ulysses"]),
        ]
    ]
    + [
        ("dit_model.py", n, a)
        for n, a in [
            (1, ["--blocks", "1", "--summary"]),
            (2, ["--fp8", "--strategy", "ring"]),
            (4, ["--tp", "2", "--cp", "2"]),
            (4, ["--tp", "4", "--fp8", "--blocks", "1"]),
        ]
    ]
)


@pytest.mark.parametrize(
    "sample,ranks,args", CASES, ids=[f"{s[:-3]}-{n}{'_'.join(a)}" for s, n, a in CASES]
)
def test_sample_simulated(sample: str, ranks: int, args: list[str]) -> None:
    p = run([str(SAMPLES / sample), "--world-size", str(ranks), *args])
    assert_passed(p, ranks)


def test_dit_block_reports_groups_and_volume() -> None:
    p = run([str(SAMPLES / "dit_block.py"), "--world-size", "4", "--tp", "2", "--cp", "2"])
    assert_passed(p, 4)
    assert "rank 3 (tp 1/2, cp 1/2)" in p.stdout
    assert "attn.out.all_reduce" in p.stdout and "n=2" in p.stdout  # per-layer comm report


def test_dit_block_rejects_a_bad_split() -> None:
    p = run([str(SAMPLES / "dit_block.py"), "--world-size", "4", "--tp", "3"])
    assert p.returncode != 0
    assert "must equal the world size 4" in p.stderr


@pytest.mark.parametrize(
    "sample", ["dist_collective.py", "tp_mlp.py", "cp_attention.py", "dit_block.py"]
)
def test_tensorrt_backend_unavailable(sample: str) -> None:
    p = run([str(SAMPLES / sample), "--world-size", "2", "--backend", "tensorrt"])
    if p.returncode == 0:  # pragma: no cover - a machine with TensorRT 11 and a GPU
        pytest.skip("TensorRT is installed here")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "TensorRT 11 is not installed" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr, p.stderr


def test_cupy_backend_needs_mpirun() -> None:
    p = run([str(SAMPLES / "tp_mlp.py"), "--backend", "cupy"])
    assert p.returncode != 0
    assert "mpirun" in p.stderr and "Traceback" not in p.stderr


# -- under mpiexec -----------------------------------------------------------------------------
MPI_CASES = [
    ("dist_collective.py", 2, ["--op", "all_to_all"]),
    ("tp_mlp.py", 2, ["--gated"]),
    ("cp_attention.py", 2, ["--strategy", "ring", "--causal", "--q-chunk", "5"]),
    ("dit_block.py", 2, ["--strategy", "ulysses"]),
    ("dit_block.py", 4, ["--tp", "2", "--cp", "2"]),
    ("dit_model.py", 2, ["--tp", "2", "--fp8", "--blocks", "1"]),
    ("dit_model.py", 4, ["--tp", "2", "--cp", "2", "--strategy", "ulysses"]),
]


@pytest.mark.parametrize(
    "sample,ranks,args", MPI_CASES, ids=[f"{s[:-3]}-{n}" for s, n, _ in MPI_CASES]
)
def test_sample_under_mpiexec(sample: str, ranks: int, args: list[str]) -> None:
    p = run([str(SAMPLES / sample), *args], mpi_ranks=ranks)
    assert_passed(p, ranks)


def test_tensorrt_backend_under_mpiexec() -> None:
    p = run([str(SAMPLES / "cp_attention.py"), "--backend", "tensorrt"], mpi_ranks=2)
    if p.returncode == 0:  # pragma: no cover - a machine with TensorRT 11 and GPUs
        pytest.skip("TensorRT is installed here")
    assert "TensorRT 11 is not installed" in p.stderr, p.stderr
    assert p.stderr.count("TensorRT 11 is not installed") == 1, p.stderr  # rank 0 only
    assert "Traceback" not in p.stderr, p.stderr


# -- the docs' code blocks ---------------------------------------------------------------------
def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block of a Markdown file."""
    text = path.read_text()
    return [
        (text.count("\n", 0, m.start(1)) + 1, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S)
    ]


def _mpi_ranks(code: str) -> int | None:
    m = re.search(r"#\s*run under:\s*mpiexec -n (\d+)", code)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("doc", ["getting-started.md", "dsl.md"])
def test_doc_blocks_run(doc: str, tmp_path: Path, monkeypatch, capsys) -> None:
    path = DOCS / doc
    blocks = python_blocks(path)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__docs__"}
    ran = 0
    for line, code in blocks:
        if "# not run:" in code or _mpi_ranks(code):
            continue
        # padded so that tracebacks (and the DSL's file:line) point at the Markdown line
        exec(compile("\n" * (line - 1) + code, str(path), "exec"), ns)
        ran += 1
    assert ran >= len(blocks) - 2
    assert "Traceback" not in capsys.readouterr().out


def test_doc_mpiexec_blocks_run(tmp_path: Path) -> None:
    mpi_blocks = [
        (line, code, _mpi_ranks(code))
        for doc in ("getting-started.md", "dsl.md")
        for line, code in python_blocks(DOCS / doc)
        if _mpi_ranks(code)
    ]
    assert mpi_blocks, "getting-started.md shows an mpiexec script"
    for line, code, ranks in mpi_blocks:
        script = tmp_path / f"block_{line}.py"
        script.write_text(code)
        p = run([str(script)], mpi_ranks=ranks)
        assert p.returncode == 0, f"block at line {line}:\n{p.stdout}{p.stderr}"
        assert f"of {ranks}" in p.stdout, p.stdout


def test_dsl_doc_names_every_op() -> None:
    text = (DOCS / "dsl.md").read_text()
    ops = list(F.__all__)
    assert len(ops) > 60
    missing = [n for n in ops if not re.search(rf"\b{n}\b", text)]
    assert not missing, f"docs/dsl.md does not mention {missing}"
    methods = [
        m for m in dir(td.Tensor) if not m.startswith("_") and callable(getattr(td.Tensor, m))
    ]
    missing = [m for m in methods if f".{m}(" not in text and f"x.{m}" not in text]
    assert not missing, f"docs/dsl.md shows no example of Tensor.{missing}"


def test_index_links_every_doc() -> None:
    text = (DOCS / "index.md").read_text()
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"} | {"api.md"}
    missing = [p for p in sorted(pages) if f"]({p})" not in text]
    assert not missing, f"docs/index.md does not link {missing}"
