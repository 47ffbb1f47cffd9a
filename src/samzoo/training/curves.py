"""Loss / validation curves of a run as one PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_path


def plot_history(history: list[dict[str, float]], path: str | Path) -> Path | None:
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in history for k in r} - {"iteration", "sec_per_it"})
    train = [k for k in keys if not k.startswith("val_") and k != "lr"]
    val = [k for k in keys if k.startswith("val_")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, group, title in ((axes[0], train, "training"), (axes[1], val, "validation")):
        for k in group:
            pts = [(r["iteration"], r[k]) for r in history if k in r]
            if pts:
                ax.plot(*zip(*pts), label=k, marker="." if title == "validation" else None)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=80, format="png")
    finally:
        plt.close(fig)
    return path
