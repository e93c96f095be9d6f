"""A memory learning key→value pairs in context: the smallest demonstration of the memory core.

A sequence repeats the same N random pairs (k_i, v_i) for several passes. Each memory writes the
sequence with its inner rule; after every pass we read every key back and report the recall error
‖M(k_i) − v_i‖ / ‖v_i‖ averaged over pairs (1.0 = nothing stored, 0.0 = perfect recall).
"""

from __future__ import annotations

import time

import torch

from .memory import LinearMemory, MLPMemory


def recall_table(n_pairs: int = 32, dim: int = 64, heads: int = 2, passes: int = 6, chunk_size: int = 8,
                 batch: int = 4, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    k = torch.nn.functional.normalize(torch.randn(batch, n_pairs, heads, dim, generator=g), dim=-1)
    v = torch.randn(batch, n_pairs, heads, dim, generator=g)
    memories = {
        "linear · gd (w/o DGD)": (LinearMemory(heads, dim, dim, rule="gd", chunk_size=chunk_size), 0.4),
        "linear · dgd (NL eq. 88)": (LinearMemory(heads, dim, dim, rule="dgd", chunk_size=chunk_size), 0.4),
        "linear · delta (NL eq. 56)": (LinearMemory(heads, dim, dim, rule="delta", chunk_size=chunk_size), 20.0),
        "linear · dgd + momentum": (LinearMemory(heads, dim, dim, rule="dgd", chunk_size=chunk_size,
                                                 momentum=True), 0.2),
        "mlp · dgd (NL eq. 89)": (MLPMemory(heads, dim, 2 * dim, rule="dgd", chunk_size=chunk_size), 0.05),
    }
    rows = []
    with torch.no_grad():
        for name, (mem, lr) in memories.items():
            state = mem.init_state(batch)
            beta = 0.5 if mem.momentum else None
            errors, tokens, elapsed = [], 0, 0.0
            for _ in range(passes):
                t0 = time.perf_counter()
                state = mem.write(state, k, v, lr=lr, decay=1.0, momentum=beta)
                elapsed += time.perf_counter() - t0
                tokens += batch * n_pairs
                err = (mem.read(state, k) - v).norm(dim=-1) / v.norm(dim=-1)
                errors.append(err.mean().item())
            rows.append({"memory": name, "lr": lr, "errors": errors, "tok_s": tokens / elapsed})
    return rows


def main(passes: int = 6) -> None:
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    rows = recall_table(passes=passes)
    head = "| memory | lr | " + " | ".join(f"pass {i + 1}" for i in range(passes)) + " | tokens/s |"
    print("Recall error ‖M(k) − v‖/‖v‖ after each pass over the same 32 pairs (D=64, chunk 8):\n")
    print(head)
    print("|" + "---|" * (passes + 3))
    for r in rows:
        errs = " | ".join(f"{e:.3f}" for e in r["errors"])
        print(f"| {r['memory']} | {r['lr']:g} | {errs} | {r['tok_s']:,.0f} |")
