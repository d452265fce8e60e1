"""A picture of a memory plan: op step across, arena offset up, one labelled rectangle per buffer.
matplotlib is an optional dependency, imported only here."""
from __future__ import annotations

from .dialects.ir import Module
from .dialects.planned_check import arena_lifetimes
from .errors import require
from .serialize import write_atomically


def draw_plan(planned: Module, path: str, title: str | None = None) -> str:
    """Write the picture of `planned`'s memory plan to `path` (PNG); returns the path."""
    require("matplotlib", "the plan picture").use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    plan = planned.meta["plan"]
    bufs = arena_lifetimes(planned)
    mib = 2 ** 20
    fig, ax = plt.subplots(figsize=(12, 6))
    cmap = plt.get_cmap("tab20")
    for i, (v, start, end) in enumerate(bufs):
        st = v.storage
        ax.add_patch(Rectangle((start, st.offset / mib), end - start + 1, st.size / mib,
                               facecolor=cmap(i % 20), edgecolor="black", linewidth=0.3, alpha=0.85))
        if (end - start + 1) * st.size > plan["arena_bytes"] * len(planned.ops) / 200:
            ax.text(start + 0.1, (st.offset + st.size / 2) / mib, v.name, fontsize=6, va="center")
    ax.axhline(plan["arena_bytes"] / mib, color="red", linewidth=1, label="arena")
    ax.axhline(plan["lower_bound_bytes"] / mib, color="green", linewidth=1, linestyle="--", label="lower bound")
    ax.set_xlim(0, max(len(planned.ops), 1))
    ax.set_ylim(0, max(plan["arena_bytes"], 1) / mib * 1.05)
    ax.set_xlabel("op step")
    ax.set_ylabel("arena offset (MiB)")
    ax.set_title(title or f"{planned.name}: arena {plan['arena_bytes'] / mib:.2f} MiB, "
                          f"lower bound {plan['lower_bound_bytes'] / mib:.2f} MiB")
    ax.legend(loc="upper right")
    fig.tight_layout()
    try:
        with write_atomically(path) as f:
            fig.savefig(f, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path
