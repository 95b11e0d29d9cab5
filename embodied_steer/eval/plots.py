"""Plots of evaluation results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from embodied_steer.eval.runner import EpisodeResult


def plot_episodes(results: Sequence["EpisodeResult"], path: str | Path, title: str = "") -> Path:
    """Two panels: cumulative success rate (with Wilson 95% band) and episode lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embodied_steer.eval.stats import wilson_interval

    path = Path(path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    if results:
        idx = np.arange(1, len(results) + 1)
        succ = np.cumsum([r.success for r in results])
        bands = np.array([wilson_interval(int(s), int(n)) for s, n in zip(succ, idx)])
        ax1.plot(idx, succ / idx, color="tab:blue", label="success rate so far")
        ax1.fill_between(idx, bands[:, 0], bands[:, 1], color="tab:blue", alpha=0.2, label="95% CI")
        colors = ["tab:green" if r.success else ("tab:gray" if r.status == "crashed" else "tab:red") for r in results]
        ax2.bar([r.episode for r in results], [r.steps for r in results], color=colors)
    ax1.set(xlabel="episodes", ylabel="success rate", ylim=(0, 1), title="success")
    ax1.legend(loc="lower right", fontsize=8)
    ax2.set(xlabel="episode", ylabel="steps", title="episode length (green: success, red: failure, grey: crashed)")
    ax2.title.set_fontsize(9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
