"""scripts/experiments.sh: its syntax, and its queue verb, which asks each queued suite what it has left (``--left``)
and starts nothing."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "experiments.sh"


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("nestlearn") is None or shutil.which("pgrep") is None,
                    reason="needs the nestlearn command (pip install -e .) and pgrep")
def test_queue_names_what_each_suite_has_left_and_starts_nothing():
    # budget/mqar128_k32.yaml has one run, stored in the repository (left again if a code change made it stale)
    env = {**os.environ, "QUEUE": "budget-mqar-k32", "CORES": "2"}
    out = subprocess.run(["bash", str(SCRIPT), "queue"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^budget-mqar-k32: (nothing left|left: pairs16 transformer_lr1e-3 seed 0 lr 0\.001)$", out.stdout,
                     re.M), out.stdout
    assert "started" not in out.stdout
