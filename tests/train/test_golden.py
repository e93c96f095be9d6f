"""A golden loss trace for the debug config catches silent numeric changes."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_debug_loss_trace_matches_golden():
    spec = importlib.util.spec_from_file_location("make_golden", REPO / "scripts" / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    golden = json.loads((REPO / "tests" / "golden" / "debug_loss.json").read_text())["loss"]
    got = mod.trace()
    assert len(got) == len(golden)
    assert got == pytest.approx(golden, rel=1e-4, abs=1e-4)
