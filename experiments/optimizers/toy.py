"""The toy of NL Fig. 4: momentum vs delta momentum on ψ(r, θ) = r² + k (r − θ + a sin(ω r))² (eq. 53),
from (r, θ) = (−3.5, 2).

    python experiments/optimizers/toy.py          # writes toy.md and toy.png next to this file

The paper gives the form of ψ and the start but not k, a, ω, the step size or the momentum factor;
the values used are written below and in toy.md. Both optimizers get the same η and α:
momentum (eq. 33) m ← α m − η g; delta momentum (eq. 49) m ← m (αI − gᵀg) − η g; then W ← W + m.
Delta momentum is run as printed and with the normalised forget term ``gᵀg → ĝᵀĝ`` (deviation D16).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from nestlearn.optim import DeltaMomentum

HERE = Path(__file__).parent
K, A, OMEGA = 10.0, 0.5, 3.0
START = (-3.5, 2.0)
LR, ALPHA, STEPS = 0.01, 0.9, 300


def psi(w: torch.Tensor) -> torch.Tensor:
    r, t = w[..., 0], w[..., 1]
    return r ** 2 + K * (r - t + A * torch.sin(OMEGA * r)) ** 2


def trajectory(kind: str) -> tuple[torch.Tensor, list[float]]:
    w = torch.nn.Parameter(torch.tensor(START, dtype=torch.float64))
    if kind == "momentum":
        opt = torch.optim.SGD([w], lr=LR, momentum=ALPHA)  # m ← α m + g, W ← W − η m (the same as eq. 33)
    else:
        opt = DeltaMomentum([w], lr=LR, alpha=ALPHA, normalize=kind.endswith("(normalised ĝ)"))
    path, losses = [w.detach().clone()], []
    for _ in range(STEPS):
        loss = psi(w)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        path.append(w.detach().clone())
        if not torch.isfinite(w).all():
            break
    return torch.stack(path), losses


def main() -> int:
    runs = {k: trajectory(k) for k in ("momentum", "delta momentum (eq. 49 literal)",
                                       "delta momentum (normalised ĝ)")}
    lines = ["# NL Fig. 4 toy: momentum vs delta momentum", "",
             "Command: `python experiments/optimizers/toy.py`  ",
             f"ψ(r, θ) = r² + {K:g}(r − θ + {A:g} sin({OMEGA:g} r))², start {START}, η = {LR}, α = {ALPHA}, "
             f"{STEPS} steps, float64. (k, a, ω, η, α are our choice: the paper gives none.)", "",
             "| optimizer | ψ after 25 | after 50 | after 100 | after 300 | first step with ψ < 1e-3 |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, (_, losses) in runs.items():
        below = next((i for i, v in enumerate(losses) if v < 1e-3), None)
        cells = [f"{losses[i]:.3g}" if i < len(losses) and losses[i] == losses[i] else "diverged"
                 for i in (25, 50, 100, STEPS - 1)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {below if below is not None else 'not reached'} |")
    lines += ["", "![trajectories](toy.png)", ""]
    (HERE / "toy.md").write_text("\n".join(lines))
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): no plot written")
        return 0
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    r, t = torch.meshgrid(torch.linspace(-4, 1.5, 200), torch.linspace(-3, 3, 200), indexing="ij")
    z = psi(torch.stack([r, t], -1).double())
    ax.contour(r, t, z.log1p(), levels=30, cmap="Greys")
    for name, (path, _) in runs.items():
        ok = torch.isfinite(path).all(-1) & (path.abs() < 10).all(-1)
        ax.plot(path[ok, 0], path[ok, 1], ".-", ms=2, lw=1, label=name)
    ax.plot(*START, "ko")
    ax.set_xlabel("r")
    ax.set_ylabel("θ")
    ax.legend()
    ax.set_xlim(-4, 1.5)
    ax.set_ylim(-3, 3)
    for name, (_, losses) in runs.items():
        finite = [v for v in losses if v == v and v < 1e12]
        ax2.semilogy(finite, label=name)
    ax2.set_xlabel("step")
    ax2.set_ylabel("ψ")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(HERE / "toy.png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
