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


@pytest.mark.parametrize("age, loop_alive, stopped, verdict", [
    (-1, 1, 1, "new"),   # no mark yet
    (179, 0, 0, "new"),  # the last session's processes are gone: a new session, however young its mark
    (179, 1, 0, "same"),  # a start beside this session's commit loop
    (100, 0, 1, "same"),  # after this session's own full stop
    (181, 1, 1, "new"),  # a mark older than a session is a past session's
])
def test_a_start_with_no_commit_loop_alive_begins_a_new_session(age, loop_alive, stopped, verdict):
    """The session's mark times the carries before its end (CARRY_AT minutes after it)."""
    out = subprocess.run(["bash", str(SCRIPT), "new-session", str(age), str(loop_alive), str(stopped)],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == verdict, out.stderr
