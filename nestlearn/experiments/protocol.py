"""The selection rule of the fair protocol (experiments/synthetic/README.md), shared by every experiment
that tunes a learning rate: a geometric grid, grown past an edge while the best rate sits on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def rate(x: float) -> float:
    """A learning rate to 3 significant digits, so that a grown grid meets the rates of a stored run."""
    return float(f"{x:.3g}")


def select_rate(score: Callable[[float], float], grid: Sequence[float], extend: int) -> tuple[float, list[float]]:
    """``(best rate, the grid as run)``: the rate of the lowest ``score`` over a geometric ``grid``; while
    the best rate is on an edge, one more rate past that edge (the grid's ratio), at most ``extend`` times
    per edge. ``score`` is called once per rate (it trains, or finds the stored run)."""
    grid = [rate(x) for x in grid]
    if len(grid) < 2:
        raise ValueError(f"a grid needs at least 2 rates (got {grid})")
    ratio = grid[1] / grid[0]
    scores: dict[float, float] = {}
    added = {"low": 0, "high": 0}
    while True:
        for x in grid:
            if x not in scores:
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


__all__ = ["rate", "select_rate"]
