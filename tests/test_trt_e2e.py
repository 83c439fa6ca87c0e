"""End-to-end tests of the TensorRT backend: real engines vs the numpy backend.

Marked ``tensorrt``. They need ``import tensorrt`` (TensorRT 11 with libnvinfer), cuda-python
and a GPU, and skip with the reason otherwise (they skip on the project's machines, where
TensorRT's builder cannot be installed: see docs/backends.md). The collective tests also need
``mpiexec`` and at least two GPUs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_trt_cases import CASES, Case

from trtdsl.backends.tensorrt import build_engine
from trtdsl.backends.tensorrt.errors import CudaError, TensorRTUnavailableError
from trtdsl.backends.tensorrt.module import import_tensorrt

pytestmark = pytest.mark.tensorrt

HERE = Path(__file__).resolve().parent


def _unavailable() -> str | None:
    try:
        import_tensorrt()
    except TensorRTUnavailableError as e:
        return f"TensorRT 11 is not available: {e}"
    from trtdsl.backends.tensorrt import runtime

    try:
        n = runtime.device_count()
    except CudaError as e:
        return f"no usable CUDA runtime: {e}"
    return None if n > 0 else "no CUDA GPU is visible"


@pytest.fixture(scope="module", autouse=True)
def _needs_tensorrt_and_gpu():
    reason = _unavailable()
    if reason:
        pytest.skip(reason)


def assert_close(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} vs {want.shape}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} vs {want.dtype}"
    if want.dtype.kind in "biu" or (rtol == 0 and atol == 0):
        np.testing.assert_array_equal(got, want, err_msg=name)
    else:
        np.testing.assert_allclose(
            got.astype(np.float32), want.astype(np.float32), rtol=rtol, atol=atol, err_msg=name
        )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_matches_numpy(case: Case, tmp_path: Path) -> None:
    net, feeds = case.make(np.random.default_rng(1))
    want = net.run(feeds)
    got = net.run(feeds, backend="tensorrt", progress=False, cache_dir=tmp_path)
    assert list(got) == list(want)
    for name in want:
        assert_close(f"{case.name}:{name}", got[name], want[name], case.rtol, case.atol)


def test_profiles_engine_cache_and_timing_cache(tmp_path: Path) -> None:
    from trtdsl.backends.tensorrt.runtime import Engine

    case = next(c for c in CASES if c.name == "rms_norm")  # input (None, 8)
    net, _ = case.make(np.random.default_rng(2))
    opts = dict(
        profiles=[{"x": [(1, 4), 8]}, {"x": [(5, 64), 8]}],
        cache_dir=tmp_path / "engines",
        timing_cache=tmp_path / "timing.cache",
        workspace=1 << 28,
        progress=False,
    )
    plan = build_engine(net, **opts)
    assert (tmp_path / "timing.cache").stat().st_size > 0
    (cached,) = (tmp_path / "engines").iterdir()
    assert cached.read_bytes() == plan
    assert build_engine(net, **opts) == plan  # from the cache
    rng = np.random.default_rng(3)
    with Engine(plan) as engine:
        for batch in (1, 3, 5, 64):  # both profiles
            x = rng.standard_normal((batch, 8)).astype(np.float32)
            got = engine.run({"x": x})["y"]
            assert_close(f"batch {batch}", got, net.run({"x": x})["y"], 1e-4, 1e-4)
        with pytest.raises(Exception, match="profile"):
            engine.run({"x": np.zeros((65, 8), np.float32)})


def test_network_build_returns_a_plan() -> None:
    case = next(c for c in CASES if c.name == "matmul")
    net, feeds = case.make(np.random.default_rng(4))
    plan = net.build(progress=True)
    assert isinstance(plan, bytes) and len(plan) > 0


# --- collectives under mpiexec ---------------------------------------------------------------
MPI_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import trtdsl as td
    sys.path.insert(0, {tests!r})
    from test_trt_cases import COLLECTIVE_CASES, collective_feeds
    from trtdsl.ops.collective import poison

    world = td.MPIWorld(timeout=300)
    failures = []
    for cc in COLLECTIVE_CASES:
        net = cc.make(world)
        feeds = collective_feeds(world, cc.dtype)
        want = net.run(feeds)["y"]  # numpy backend over MPI: the reference
        got = net.run(feeds, backend="tensorrt", progress=False)["y"]
        wf = want.astype(np.float64)
        # outputs the op leaves undefined (reduce/gather off the root) are NaN / int minimum
        defined = ~np.isnan(wf) & (want != poison(np, want.shape, want.dtype))
        gf = got.astype(np.float64)
        ok = got.shape == want.shape and np.array_equal(gf[defined], wf[defined])
        if not ok:
            failures.append(cc.name)
        print(f"rank {{world.rank}} {{cc.name}}: {{'ok' if ok else 'MISMATCH'}}", flush=True)
    print(f"rank {{world.rank}} failures: {{failures}}", flush=True)
    sys.exit(1 if failures else 0)
    """
)


def test_collectives_under_mpiexec(tmp_path: Path) -> None:
    from trtdsl.backends.tensorrt import runtime

    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    if mpiexec is None:
        pytest.skip("mpiexec is not installed")
    gpus = runtime.device_count()
    if gpus < 2:
        pytest.skip(f"collectives need at least 2 GPUs, found {gpus}")
    n = 4 if gpus >= 4 else 2
    script = tmp_path / "collectives.py"
    script.write_text(MPI_SCRIPT.format(tests=str(HERE)))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off on the lent machines
    proc = subprocess.run(
        [mpiexec, "-n", str(n), sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
