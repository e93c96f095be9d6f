"""What every benchmark shares: timing, the machine and provenance lines of a results table, and
writing it. ``benchmarks/*.py`` and ``nestlearn bench`` use these, so that a number is measured one way."""

from __future__ import annotations

import datetime
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int = 3, warmup: bool = True) -> float:
    """Median seconds of ``repeats`` calls (one call when ``repeats`` is 0), after one warm-up call."""
    if warmup:
        fn()
    out = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def throughput(model: torch.nn.Module, ids: torch.Tensor, repeats: int = 3) -> tuple[float, float]:
    """``(training tokens/s, inference tokens/s)`` of a causal LM on ``ids`` ``[B, T]``: a training step is
    forward + backward + AdamW step; inference a ``no_grad`` forward over the whole sequence."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        _, loss, _ = model(ids, targets=ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(ids)

    return ids.numel() / timed(train_step, repeats), ids.numel() / timed(infer, repeats)


def allocator() -> str:
    """The malloc this process runs under: jemalloc / tcmalloc when preloaded, else the system's."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in maps:
            return name
    return "system (glibc)" if platform.system() == "Linux" else "system"


def preloaded(cmd: str, alloc: str | None = None) -> str:
    """The command as it was run: with ``LD_PRELOAD=<lib…>`` when a malloc was preloaded."""
    alloc = allocator() if alloc is None else alloc
    return cmd if alloc in ("system (glibc)", "system", "unknown") else f"LD_PRELOAD=<lib{alloc}> {cmd}"


def commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes under nestlearn/ or benchmarks/)."""
    def git(*a):
        try:
            return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "nestlearn", "benchmarks") else "")


def cpu() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows: numbers can depend on it (M3's
    first steps do, ``experiments/optimizers/probes/cpu_fingerprint.md``), so results rows record it."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown"


def machine() -> str:
    """``x86_64 <cpu>, N threads, torch X, malloc: Y``."""
    return (f"{platform.machine()} {cpu()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, malloc: {allocator()}")


def stamp() -> str:
    """``Measured: <UTC time> at commit <commit>``."""
    return f"Measured: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit {commit()}"


def write_lines(out: str | Path, lines: list[str]) -> None:
    """Write a results table atomically (creating its folder) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


__all__ = ["allocator", "commit", "cpu", "machine", "preloaded", "stamp", "throughput", "timed", "write_lines"]
