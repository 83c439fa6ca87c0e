"""docs/api.md is generated from the docstrings and must be kept up to date."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_is_current():
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_api_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr + "\nrun: python tools/gen_api_docs.py"


def test_api_reference_lists_the_public_api():
    text = (ROOT / "docs" / "api.md").read_text()
    for name in (
        "class Network",
        "def all_reduce",
        "def cp_attention",
        "class MPIWorld",
        "class Communicator",
        "def build_engine",
        "class NcclWorld",
    ):
        assert name in text, name
