"""torchrun with 2 CPU processes (gloo; DDP and FSDP2) follows the single-process loss at the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("block,parallel,optim", [("transformer", "ddp", "adamw"), ("hope_attention", "ddp", "adamw"),
                                                  ("hope", "ddp", "adamw"), ("transformer", "ddp", "m3"),
                                                  ("transformer", "fsdp", "adamw"), ("hope", "fsdp", "adamw"),
                                                  ("titans", "fsdp", "adamw"), ("hope", "ddp", "recompute")])
def test_two_processes_follow_single_process(tmp_path, block, parallel, optim):
    """``optim="recompute"``: AdamW with train.activation_checkpointing (HOPE recomputes its in-context segments;
    DDP with a static graph)."""
    extra = ["train.activation_checkpointing=true"] if optim == "recompute" else []
    optim = "adamw" if optim == "recompute" else optim
    common = ["train.steps=6", "train.log_every=1", "train.eval_every=3", "train.ckpt_every=3",
              "train.progress=false", f"model.block={block}", "train.batch_size=8", f"train.parallel={parallel}",
              f"optim.name={optim}", "optim.matrix_lr=1e-4", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "nestlearn", "train", "configs/debug.yaml",
                             f"train.out_dir={tmp_path / 'one'}", *common], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "nestlearn", "train", "configs/debug.yaml", f"train.out_dir={tmp_path / 'two'}",
                          *common], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 6
    # M3 orthogonalises in bfloat16 and divides by √V: the last-bit differences of an all-reduced
    # gradient grow to a few percent within 6 steps, so its trajectory is compared loosely.
    tol = 0.1 if optim == "m3" else 1e-4
    assert a == pytest.approx(b, rel=tol, abs=tol)
    assert a[0] == pytest.approx(b[0], rel=1e-5)  # the first loss is computed before any update
    assert (tmp_path / "two" / "checkpoints" / "latest").read_text() == "step_0000006"


@pytest.mark.parametrize("block", ["hope", "hope_attention"])
def test_ddp_gradients_equal_one_process_with_recomputed_segments(tmp_path, block):
    """Recomputed in-context segments run a backward inside the backward, so each parameter's gradient hook fires
    once per recomputed node; DDP (with a static graph) still reduces every gradient once, after its last
    contribution: the two processes' gradients equal one process's full-batch ones, in the first iteration
    (which a static graph records) and the second, in float64. Hope-Attention recomputes segments too. A step
    with another layout (a shorter sequence: fewer nodes) would be reduced at the wrong time (measured: gradients
    off by 5×), so it is refused."""
    out = tmp_path / "worst.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(Path(__file__).parent / "ddp_grads.py"), block, str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    worst, segments, refused = out.read_text().split()
    assert segments == "True" and float(worst) < 1e-10 and refused == "yes"


def test_fsdp_checkpoints_keep_the_best_weights_whole_and_resume(tmp_path):
    """``train.keep_best`` under FSDP2: the best weights are DTensors, gathered whole by every rank into each
    checkpoint's ``best.safetensors`` (equal to one process's); a resumed two-process run reads them back and
    restores them at its end through the full-state path."""
    from safetensors.torch import load_file

    common = ["train.log_every=1", "train.eval_every=3", "train.ckpt_every=3", "train.progress=false",
              "model.block=transformer", "train.batch_size=8", "train.parallel=fsdp", "train.keep_best=true"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    one = ["-m", "nestlearn", "train", "configs/debug.yaml", "train.steps=6", f"train.out_dir={tmp_path / 'one'}"]
    single = subprocess.run([sys.executable, *one, *common], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nestlearn",
                "train", "configs/debug.yaml", f"train.out_dir={tmp_path / 'two'}", *common]
    first = subprocess.run([*torchrun, "train.steps=6"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "checkpoints" / "step_0000006" / "best.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "step_0000006" / "best.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 1e-4 * (1 + a[k].abs().max()), k
    resumed = subprocess.run([*torchrun, "train.steps=9", "--resume"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "two" / "checkpoints" / "latest").read_text() == "step_0000009"
