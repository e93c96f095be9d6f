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


def test_the_pattern_names_every_suite_and_the_probe_scripts():
    """PATTERN (what `pause`, `resume`, `stop` and the core count reach): the suites, run as `python -m nestlearn`
    or through the `nestlearn` command, and probe scripts run by hand; not a test run or an editor."""
    pattern = re.search(r'^PATTERN="(.*)"$', SCRIPT.read_text(), re.M).group(1)
    for line in ("/usr/bin/python -m nestlearn synthetic experiments/synthetic/mad.yaml --threads 1",
                 "/usr/bin/python3.11 /usr/bin/nestlearn optimizers",
                 "python experiments/optimizers/probes/long_budget.py",
                 "python experiments/synthetic/probes/length_failure.py --runs 3"):
        assert re.search(pattern, line), line
    for line in ("python -m pytest -q tests/experiments", "vim experiments/optimizers/probes/notes.md"):
        assert not re.search(pattern, line), line


@pytest.mark.skipif(shutil.which("pgrep") is None, reason="needs pgrep")
def test_queue_names_what_each_suite_has_left_and_starts_nothing():
    # budget/mqar128_k32.yaml has one run, stored in the repository (left again if a code change made it stale)
    env = {**os.environ, "QUEUE": "budget-mqar-k32", "CORES": "2"}
    out = subprocess.run(["bash", str(SCRIPT), "queue"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^budget-mqar-k32: (nothing left|left: pairs16 transformer_lr1e-3 seed 0 lr 0\.001)$", out.stdout,
                     re.M), out.stdout
    assert "started" not in out.stdout
