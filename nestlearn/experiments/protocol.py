"""What the fair protocol (experiments/synthetic/README.md) shares between experiments: the selection
rule (a geometric grid, grown past an edge while the best rate sits on it) and the provenance of a row
(the code version it ran, and whether two fingerprints are the same computation), the store of finished
runs (one JSON line per run, appended under a file lock), and the runs in progress (checkpointed, so that a
killed run resumes where it was)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def rate(x: float) -> float:
    """A learning rate to 3 significant digits, so that a grown grid meets the rates of a stored run."""
    return float(f"{x:.3g}")


def grid_problem(grid) -> str | None:
    """What keeps ``grid`` from being a learning-rate grid ``select_rate`` can grow (at least 3 positive,
    increasing rates with a constant ratio, so that a best rate can be inside it and the grid can grow past an
    edge), or None."""
    positive = len(grid) >= 3 and all(isinstance(x, (int, float)) and x > 0 for x in grid)
    ratios = [b / a for a, b in zip(grid, grid[1:], strict=False)] if positive else []
    if not positive or any(r <= 1 for r in ratios) or max(ratios) / min(ratios) > 1.01:
        return (f"needs ≥ 3 positive, increasing rates with a constant ratio (at least 3, so that a best rate can be "
                f"inside it; geometric, so that it can grow past an edge) (got {list(grid)!r})")
    return None


def select_rate(score: Callable[[float], float], grid: Sequence[float], extend: int,
                first: Callable[[float], bool] | None = None) -> tuple[float, list[float]]:
    """``(best rate, the grid as run)``: the rate of the lowest ``score`` over a geometric ``grid``; while
    the best rate is on an edge, one more rate past that edge (the grid's ratio), at most ``extend`` times
    per edge. ``score`` is called once per rate (it trains, or finds the stored run); the rates for which
    ``first(rate)`` is true (e.g. a run in progress to resume) are scored before the others, which changes
    the order of the runs only, never the rate selected."""
    grid = [rate(x) for x in grid]
    if len(grid) < 2:
        raise ValueError(f"a grid needs at least 2 rates (got {grid})")
    ratio = grid[1] / grid[0]
    scores: dict[float, float] = {}
    added = {"low": 0, "high": 0}
    while True:
        for x in sorted((x for x in grid if x not in scores), key=lambda x: not (first and first(x))):
            scores[x] = score(x)
        best = min(grid, key=lambda x: scores[x])
        if best == grid[0] and added["low"] < extend:
            grid.insert(0, rate(grid[0] / ratio))
            added["low"] += 1
        elif best == grid[-1] and added["high"] < extend:
            grid.append(rate(grid[-1] * ratio))
            added["high"] += 1
        else:
            return best, grid


_VERSION: dict[str, str] = {}


def code_version() -> dict[str, str]:
    """``{"commit": …, "code": …}``: the checkout's commit, and a hash of the library's sources as this
    process runs them (``nestlearn/`` at the commit plus any uncommitted change), so that a docs-only
    commit keeps the code version and an uncommitted change makes a new one. ``unknown`` outside git.
    Read once per process (at import): edits made while a suite runs do not change what it runs."""
    if not _VERSION:
        _VERSION.update(_read_version())
    return dict(_VERSION)


def _read_version() -> dict[str, str]:
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        tree = git("rev-parse", "HEAD:nestlearn").strip()
        diff = git("diff", "HEAD", "--", "nestlearn")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "code": "unknown"}
    code = tree[:12] if not diff else tree[:12] + "+" + hashlib.sha1(diff.encode()).hexdigest()[:8]
    return {"commit": commit[:12] + ("+dirty" if diff else ""), "code": code}


code_version()  # the sources as this process imported them


def same_behaviour(a: list[float] | None, b: list[float] | None) -> bool:
    """Fingerprints equal to rounding (relative 1e-4): thread counts and summation order may differ."""
    if a is None or b is None or len(a) != len(b):
        return False
    return all((math.isnan(x) and math.isnan(y)) or x == y or abs(x - y) <= 1e-6 + 1e-4 * abs(y)
               for x, y in zip(a, b, strict=True))


def same_value(a, b) -> bool:
    """Equal as stored numbers: the same float (NaN equals NaN), element by element in lists."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def first_difference(a, b):
    """Where two stored values first part: ``None`` when the same, else ``[index or None, stored, again]``
    (for a list, its first element that differs)."""
    if same_value(a, b):
        return None
    if isinstance(a, list) and isinstance(b, list):
        i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if not same_value(x, y)), min(len(a), len(b)))
        return [i, a[i] if i < len(a) else None, b[i] if i < len(b) else None]
    return [None, a, b]


def report_rerun(check) -> int:
    """A reproduction probe's ending: run ``check()`` (a :func:`rerun_comparison` result), print ``identical`` or
    the fields that differ, and return the exit status (0: identical, 1: differs). A ``ValueError`` (no such
    row, a row of other settings) ends the probe with its message."""
    try:
        c = check()
    except ValueError as e:
        raise SystemExit(f"reproduce: {e}") from None
    differ = [f for f, same in c["equal"].items() if not same]
    print("identical" if not differ else f"differs in {', '.join(differ)}", flush=True)
    return 0 if not differ else 1


def rerun_comparison(old: dict, new: dict, fields: Sequence[str]) -> dict:
    """A stored row against the same run trained again: ``{"equal": {field: bool}, "differences": {field:
    first_difference}}`` over ``fields`` (a field either row lacks is skipped: an older row may not record it)."""
    equal = {k: same_value(old[k], new[k]) for k in fields if k in old and k in new}
    return {"equal": equal, "differences": {k: first_difference(old[k], new[k]) for k, ok in equal.items() if not ok}}


def rerun_table(title: str, command: str, what: str, checks: list[dict], label: Callable[[dict], str],
                scores: str, stored: Callable[[dict], str], again: Callable[[dict], str]) -> list[str]:
    """The table of a reproduction probe: one line per check (a stored run trained again) with both code
    versions, identical or the fields that differ, and the scores stored and again."""
    from ..benchmarking import stamp

    lines = [f"# {title}", "", f"Command: `{command}`  ", f"{stamp()}. {what}", "",
             f"| run | stored at commit (code) | trained again at commit (code) | result | {scores} stored / again | "
             "CPU min |", "|---|---|---|---|---|---:|"]
    for c in checks:
        differ = [f for f, ok in c["equal"].items() if not ok]
        lines.append(f"| {label(c)} | {c['stored_commit']} ({c['stored_code']}) | {c['commit']} ({c['code']}) | "
                     f"{'identical' if not differ else 'differs: ' + ', '.join(differ)} | {stored(c)} / {again(c)} | "
                     f"{c['cpu_s'] / 60:.1f} |")
    return lines


def read_rows(path: Path) -> list[dict]:
    """The finished runs in a ``.jsonl`` file (none if it does not exist); a line cut short by a crash is
    skipped, so that run is redone."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on ``path``'s store (``<path>.lock``), held while the block runs: processes that share
    a suite append rows and write its tables one at a time."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): one process per suite
        yield
        return
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_atomic(path: Path, text: str) -> None:
    """Write a table through this process's own temporary file and a rename: a reader never sees half a
    file, and processes that share a suite do not rename each other's temporary files."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def append_row(path: Path, row: dict) -> list[dict]:
    """Append one finished run under the store's lock and return every row the file then holds (processes
    that share the file append theirs too)."""
    with locked(path):
        with path.open("ab+") as f:
            f.seek(0, 2)
            cut = f.tell() > 0 and (f.seek(-1, 2), f.read(1))[1] != b"\n"  # a line cut short by a crash
            f.write((("\n" if cut else "") + json.dumps(row) + "\n").encode())
        return read_rows(path)


__all__ = ["append_row", "code_version", "grid_problem", "locked", "partial_path", "rate", "read_rows",
           "same_behaviour", "select_rate", "write_atomic"]


# ---- runs in progress --------------------------------------------------------------------------

PARTIAL = ".partial"  # an experiment's folder (beside its store, ignored by git) of its runs in progress
CHECKPOINT_EVERY = 250  # steps between a run's checkpoints while it is in progress (a killed run resumes there)


def partial_path(root: Path, label: str, what: dict) -> Path:
    """The folder :func:`partial_folder` names for a run (without creating or checking it)."""
    digest = hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(root) / f"{label}-{digest}"


def partial_folder(root: Path, label: str, what: dict, code: str, fingerprint: list[float] | None,
                   log=None) -> Path:
    """The folder where one run checkpoints while it is in progress: ``root/<label>-<digest of what>``,
    ``what`` being everything that decides the run. A run left there by another code version is resumed only
    when that version's fingerprint equals ``fingerprint`` (the same computation, as for stored rows);
    otherwise its folder is emptied and the run starts over."""
    folder = partial_path(root, label, what)
    meta = folder / "run.json"
    if meta.is_file():
        old = json.loads(meta.read_text())
        if old.get("code") != code and not same_behaviour(old.get("fingerprint"), fingerprint):
            if log:
                log(f"  {label}: the run in progress in {folder} ran other code ({old.get('code')}, another "
                    "fingerprint): starting over")
            shutil.rmtree(folder, ignore_errors=True)
    if not meta.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(meta, json.dumps({"code": code, "fingerprint": fingerprint, **what}, default=str))
    return folder


def _step(latest: Path) -> int:
    return int(latest.read_text().strip().rpartition("_")[2])


def _state_file(latest: Path) -> Path:
    """The ``state.json`` of the checkpoint a run's ``checkpoints/latest`` names."""
    return latest.parent / latest.read_text().strip() / "state.json"


def _cpu_s(latest: Path) -> float:
    """The CPU time a run had spent at its latest checkpoint (``RunClock``'s record; infinite when unknown)."""
    try:
        return float(json.loads(_state_file(latest).read_text())["extra"]["cpu_s"])
    except (OSError, KeyError, TypeError, ValueError):
        return math.inf


def finished(run: Path) -> bool:
    """Whether the run in progress ``…/.partial/<run>`` has its row stored: a row of a store beside the
    ``.partial`` folder (``*.jsonl``) names it (``"run": <run>``, which the suites write with each row) and ran
    the same computation as the run's ``run.json`` records (the same code version, or a fingerprint equal to
    it, the rule :func:`partial_folder` resumes by). A row of an older computation that names the same folder
    (a run started over after a change of fingerprint) does not end the run in progress. Without a
    ``run.json``, the name alone decides."""
    run = Path(run)
    name = run.name
    try:
        meta = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        meta = None
    for store in sorted(run.parent.parent.glob("*.jsonl")):
        try:
            text = store.read_text()
        except OSError:
            continue
        if f'"{name}"' not in text:  # most stores do not name it at all: skip the parsing
            continue
        for r in read_rows(store):
            if r.get("run") != name:
                continue
            if meta is None or r.get("code") == meta.get("code") or same_behaviour(
                    r.get("fingerprint"), meta.get("fingerprint")):
                return True
    return False


def carry_runs(root: Path, dest: Path, min_cpu_s: float = 0.0) -> list[str]:
    """Copy every run in progress under ``root`` (each ``…/.partial/<run>`` with a checkpoint: its files and its
    latest checkpoint only) into ``dest``, at the same relative paths, replacing what ``dest`` held; returns the
    runs carried. ``.partial/`` is ignored by git, so a new session's fresh checkout starts those runs over;
    ``dest`` is a folder that can be committed (``scripts/experiments.sh carry``), and :func:`restore_runs`
    puts the runs back. ``dest`` itself is not searched. Runs whose checkpoint records less than ``min_cpu_s``
    of CPU time are left out: cheaper to redo than to store (a checkpoint is ~2 MB in git's history). So are runs
    whose row is already stored (:func:`finished`): a past session may have carried a run whose row it stored
    after that carry; restored, such a run would never be resumed, and would be carried again forever. A run
    paused on purpose, however long ago, is carried: its row is not stored."""
    root, dest = Path(root), Path(dest)
    staged = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staged, ignore_errors=True)
    carried = []
    for latest in sorted(root.glob(f"**/{PARTIAL}/*/checkpoints/latest")):
        run = latest.parent.parent
        if dest in run.parents or staged in run.parents:
            continue
        target = staged / run.relative_to(root)
        if min_cpu_s > 0 and _cpu_s(latest) < min_cpu_s:
            continue
        if finished(run):
            continue
        for _ in range(3):  # the run may write its next checkpoint meanwhile (every few minutes): read again
            try:
                step = latest.read_text().strip()
                shutil.rmtree(target, ignore_errors=True)
                (target / "checkpoints").mkdir(parents=True)
                for f in run.iterdir():
                    if f.is_file():
                        shutil.copy2(f, target / f.name)
                shutil.copytree(latest.parent / step, target / "checkpoints" / step)
                (target / "checkpoints" / "latest").write_text(step)
                carried.append(str(run.relative_to(root)))
                break
            except FileNotFoundError:
                continue
    shutil.rmtree(dest, ignore_errors=True)
    if carried:
        staged.rename(dest)
    else:
        shutil.rmtree(staged, ignore_errors=True)
    return carried


def restore_runs(dest: Path, root: Path) -> list[str]:
    """Put the runs :func:`carry_runs` copied into ``dest`` back under ``root``, each unless its ``.partial``
    folder there already holds a checkpoint as late or later, or its row is stored there (:func:`finished`);
    returns the runs restored. A restored run is then resumed as any other (:func:`partial_folder` checks its
    code's fingerprint)."""
    dest, root = Path(dest), Path(root)
    restored = []
    for latest in sorted(dest.glob(f"**/{PARTIAL}/*/checkpoints/latest")):
        run = latest.parent.parent
        target = root / run.relative_to(dest)
        have = target / "checkpoints" / "latest"
        if (have.is_file() and _step(have) >= _step(latest)) or finished(target):
            continue
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(run, target)
        restored.append(str(run.relative_to(dest)))
    return restored


class RunClock:
    """A run's time across interruptions, for a ``Trainer`` that checkpoints in ``folder`` (or None: a run that
    is not resumable). ``on_save`` (the trainer's hook) records the time spent so far with each checkpoint and
    removes the checkpoints older than the latest; ``resume`` loads the latest checkpoint, when there is one;
    ``totals`` gives ``cpu_s``, ``wall_s`` and ``train_s`` summed over every part, ``resumed_at`` (when
    resumed) the steps the run continued from, and ``cpus``: the CPU model of each part, in order, a repeat
    merged (``"unknown"`` for parts checkpointed before 2026-12-02, which did not record it). M3's numbers
    depend on the CPU beyond rounding (``experiments/optimizers/probes/cpu_fingerprint.md``), so a row says
    where it was trained."""

    def __init__(self, folder: Path | None):
        self.folder = None if folder is None else Path(folder)
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.before = {"cpu_s": 0.0, "wall_s": 0.0, "train_s": 0.0, "resumed_at": [], "cpus": []}
        self.train_s: float | None = None  # this part's training time, once ``trained`` is called

    def on_save(self) -> dict:
        root = self.folder / "checkpoints"
        latest = (root / "latest").read_text().strip() if (root / "latest").is_file() else None
        for old in root.glob("step_*"):
            if old.name != latest:  # the latest stays until the checkpoint being written replaces it
                shutil.rmtree(old, ignore_errors=True)
        now = time.perf_counter() - self.t0
        return {"cpu_s": self.before["cpu_s"] + time.process_time() - self.c0,
                "wall_s": self.before["wall_s"] + now, "train_s": self.before["train_s"] + now,
                "resumed_at": self.before["resumed_at"], "cpus": self.cpus()}

    def cpus(self) -> list[str]:
        """The CPU model of every part so far, this one last, a repeat merged."""
        from ..benchmarking import cpu  # imported here: the carry command needs no torch

        parts = [*self.before["cpus"], cpu()]
        return [c for i, c in enumerate(parts) if i == 0 or c != parts[i - 1]]

    def resume(self, trainer) -> bool:
        if self.folder is None or not (self.folder / "checkpoints" / "latest").is_file():
            return False
        trainer.load()
        self.before.update(trainer.extra)
        if "cpus" not in trainer.extra:  # checkpointed before the parts recorded their CPU
            self.before["cpus"] = ["unknown"]
        self.before["resumed_at"] = [*self.before["resumed_at"], trainer.step]
        return True

    def trained(self) -> None:
        self.train_s = time.perf_counter() - self.t0

    def totals(self) -> dict:
        train_s = self.train_s if self.train_s is not None else time.perf_counter() - self.t0
        out = {"wall_s": self.before["wall_s"] + time.perf_counter() - self.t0,
               "train_s": self.before["train_s"] + train_s,
               "cpu_s": self.before["cpu_s"] + time.process_time() - self.c0}
        if self.before["resumed_at"]:
            out["resumed_at"] = self.before["resumed_at"]
        out["cpus"] = self.cpus()
        return out


def main(argv: list[str] | None = None) -> int:
    """``python -m nestlearn.experiments.protocol carry|restore [ROOT]``: copy the runs in progress under ROOT
    (default ``experiments``) into ``ROOT/carry``, or put them back (what ``scripts/experiments.sh`` calls)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    p.add_argument("verb", choices=["carry", "restore"])
    p.add_argument("root", nargs="?", default="experiments")
    p.add_argument("--min-cpu-min", type=float, default=15.0,
                   help="carry only runs that have spent at least this many CPU minutes (default 15)")
    args = p.parse_args(argv)
    root = Path(args.root)
    if args.verb == "carry":
        runs = carry_runs(root, root / "carry", min_cpu_s=60 * args.min_cpu_min)
        print(f"carried {len(runs)} run(s) in progress to {root / 'carry'}" + "".join(f"\n  {r}" for r in runs))
    else:
        runs = restore_runs(root / "carry", root)
        print(f"restored {len(runs)} run(s) in progress from {root / 'carry'}" + "".join(f"\n  {r}" for r in runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
