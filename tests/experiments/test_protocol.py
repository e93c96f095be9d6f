"""The protocol's selection rule on its own: the best rate inside the grid, the grid grown past an edge."""

import pytest

from nestlearn.experiments.protocol import rate, select_rate


@pytest.mark.parametrize("optimum, expect_best, expect_grid", [
    (3e-3, 0.00316, [0.001, 0.00316, 0.01]),  # inside: nothing added
    (0.1, 0.0316, [0.001, 0.00316, 0.01, 0.0316]),  # grown once upward (extend=1), still on the edge
    (1e-4, 0.000316, [0.000316, 0.001, 0.00316, 0.01]),
])
def test_select_rate_grows_the_grid_while_the_best_is_on_an_edge(optimum, expect_best, expect_grid):
    import math

    calls = []

    def score(lr):
        calls.append(lr)
        return (math.log(lr) - math.log(optimum)) ** 2

    best, grid = select_rate(score, [1e-3, 3.16e-3, 1e-2], extend=1)
    assert best == expect_best and grid == expect_grid
    assert sorted(calls) == sorted(grid)  # each rate trained once
    assert rate(0.0031622776) == 0.00316


def test_a_rate_in_progress_runs_first_and_changes_nothing_else():
    import math

    def run(first):
        calls = []

        def score(lr):
            calls.append(lr)
            return (math.log(lr) - math.log(0.1)) ** 2

        return (*select_rate(score, [1e-3, 3.16e-3, 1e-2], extend=2, first=first), calls)

    best, grid, calls = run(None)
    best_f, grid_f, calls_f = run(lambda lr: lr == 0.00316)
    assert (best_f, grid_f) == (best, grid) and sorted(calls_f) == sorted(calls)
    assert calls_f[0] == 0.00316 and calls[0] == 0.001


def test_partial_path_is_the_folder_partial_folder_makes(tmp_path):
    from nestlearn.experiments.protocol import partial_folder, partial_path

    what = {"family": "mad", "settings": {"lr": 0.001}}
    assert not partial_path(tmp_path, "run", what).exists()  # naming a folder creates nothing
    assert partial_folder(tmp_path, "run", what, "code", None) == partial_path(tmp_path, "run", what)
    assert partial_path(tmp_path, "run", {**what, "family": "formal"}) != partial_path(tmp_path, "run", what)


def test_rows_are_appended_under_a_lock_and_a_cut_line_is_skipped(tmp_path):
    from nestlearn.experiments.protocol import append_row, read_rows

    path = tmp_path / "runs.jsonl"
    assert read_rows(path) == []
    assert append_row(path, {"a": 1}) == [{"a": 1}]
    with path.open("a") as f:
        f.write('{"a": 2, "cut sh')  # a crash in the middle of a line
    assert read_rows(path) == [{"a": 1}]
    assert append_row(path, {"a": 3}) == [{"a": 1}, {"a": 3}]  # the next row starts a line of its own
    assert (tmp_path / "runs.jsonl.lock").is_file()


def test_a_rerun_is_compared_number_by_number():
    """The reproduction probes' comparison: the same float (NaN equals NaN), lists element by element, and where
    two values first part; a field one row lacks is skipped."""
    from nestlearn.experiments.protocol import first_difference, rerun_comparison, same_value

    nan = float("nan")
    assert same_value([1.0, nan, [2, 3]], [1.0, nan, [2, 3]]) and not same_value([1.0], [1.0 + 1e-12])
    assert first_difference([[100, 1.0], [200, 0.5]], [[100, 1.0], [200, 0.6]]) == [1, [200, 0.5], [200, 0.6]]
    assert first_difference([1], [1, 2]) == [1, None, 2] and first_difference(1.0, 2.0) == [None, 1.0, 2.0]
    c = rerun_comparison({"a": 1.0, "b": [1, 2], "old": 3}, {"a": 1.0, "b": [1, 3], "new": 4}, ["a", "b", "old"])
    assert c == {"equal": {"a": True, "b": False}, "differences": {"b": [1, 2, 3]}}


def test_run_clock_records_the_cpu_of_every_part(tmp_path, monkeypatch):
    """RunClock.totals names the CPU of each part of a run, a repeat merged; a part checkpointed before the
    parts recorded their CPU is "unknown", never guessed."""
    import types

    import nestlearn.benchmarking as bench
    from nestlearn.experiments.protocol import RunClock

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step_4")
    monkeypatch.setattr(bench, "cpu", lambda: "CPU A")
    assert RunClock(None).totals()["cpus"] == ["CPU A"]
    first = RunClock(tmp_path)
    saved = first.on_save()  # what a checkpoint keeps (the trainer's ``extra``)
    assert saved["cpus"] == ["CPU A"]

    def resumed(extra):
        clock = RunClock(tmp_path)
        assert clock.resume(types.SimpleNamespace(load=lambda: None, extra=extra, step=4))
        return clock.totals()

    assert resumed(saved)["cpus"] == ["CPU A"]  # the same CPU: one part named once
    monkeypatch.setattr(bench, "cpu", lambda: "CPU B")
    again = resumed(saved)
    assert again["cpus"] == ["CPU A", "CPU B"] and again["resumed_at"] == [4]
    old = {k: v for k, v in saved.items() if k != "cpus"}
    assert resumed(old)["cpus"] == ["unknown", "CPU B"]
