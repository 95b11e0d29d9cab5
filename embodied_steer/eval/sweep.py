"""Sweeps: a grid over envs (suites), tasks, policies, seeds and intervention settings, in one command.

Each grid point is an :class:`~embodied_steer.eval.cells.EvalCell` composed exactly like
``embodied-steer eval`` with the point's overrides, and writes its own results folder
``<output_dir>/<cell name>/``. A *setting* is a cell without its seed: the summary pools a setting's
seeds. Outputs next to the cell folders:

* ``summary.csv`` / ``summary.md`` / ``summary.json`` — one row per setting (successes, episodes,
  success rate with its Wilson 95% interval, crashed, mean steps, seeds);
* ``sweep.png`` — success rate per setting with the Wilson intervals;
* ``settings/<setting>.png`` — the evaluator's two-panel plot over a setting's pooled episodes.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from embodied_steer.core.errors import ConfigError
from embodied_steer.eval.cells import EvalCell, run_cell_inprocess
from embodied_steer.eval.runner import EpisodeResult, read_results
from embodied_steer.eval.stats import wilson_interval

log = logging.getLogger(__name__)

AXES = ("env", "task", "policy", "seed")


def _as_list(value: Any, name: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"grid.{name} is empty")
        return list(value)
    return [value]


def grid_points(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The product of the grid's lists, in order: dicts with ``env``, ``task``, ``policy``, ``seed``
    and ``intervention`` (a dict of the intervention settings of that point)."""
    unknown = set(grid) - set(AXES) - {"intervention"}
    if unknown:
        raise ConfigError(f"unknown grid axes {sorted(unknown)}; known: {[*AXES, 'intervention']}")
    axes = {name: _as_list(grid.get(name, [None]), name) for name in AXES}
    for name in ("env", "policy", "seed"):
        if any(v is None for v in axes[name]):
            raise ConfigError(f"grid.{name} needs values, got {axes[name]}")
    inter = dict(grid.get("intervention") or {})
    inter_keys = sorted(inter)
    inter_lists = [_as_list(inter[k], f"intervention.{k}") for k in inter_keys]
    points = []
    for env, task, policy, seed, values in itertools.product(axes["env"], axes["task"], axes["policy"], axes["seed"],
                                                              itertools.product(*inter_lists)):
        points.append({"env": env, "task": task, "policy": policy, "seed": int(seed),
                       "intervention": dict(zip(inter_keys, values))})
    return points


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", str(value))


def setting_name(point: Mapping[str, Any]) -> str:
    """Folder-safe name of a grid point without its seed, e.g. ``lift-lift_diffusion-noise_scale=0.5``."""
    parts = [point["env"]]
    if point.get("task") is not None:
        parts.append(f"task{point['task']}")
    parts.append(point["policy"])
    parts += [f"{k}={v}" for k, v in sorted(point["intervention"].items())]
    return "-".join(_slug(p) for p in parts)


def cell_name(point: Mapping[str, Any]) -> str:
    return f"{setting_name(point)}-seed{point['seed']}"


def build_cells(cfg: DictConfig, output_dir: Path) -> list[EvalCell]:
    """Compose one ``eval`` config per grid point (its overrides after the sweep's ``overrides``)."""
    from embodied_steer.cli import compose

    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    episodes = int(cfg.episodes)
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    common = [str(o) for o in (cfg.get("overrides") or [])]
    cells = []
    for point in grid_points(grid):
        overrides = [f"env={point['env']}", f"policy={point['policy']}", f"episodes={episodes}",
                     f"seed={point['seed']}", *common]
        if point["task"] is not None:
            overrides.append(f"env.task={point['task']}")
        overrides += [f"intervention.{k}={json.dumps(v)}" for k, v in point["intervention"].items()]
        eval_cfg = compose("eval", overrides)
        name = cell_name(point)
        cells.append(EvalCell.from_config(eval_cfg, output_dir / name, name=name,
                                          labels={**{k: point[k] for k in AXES}, **point["intervention"],
                                                  "setting": setting_name(point)}))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ConfigError(f"the grid repeats a point: {sorted(n for n in names if names.count(n) > 1)}")
    return cells


@dataclass
class SettingRow:
    """One row of the sweep's summary: a setting with its seeds pooled."""

    setting: str
    labels: dict[str, Any]
    seeds: list[int]
    episodes: int
    successes: int
    crashed: int
    success_rate: float
    ci95: tuple[float, float]
    mean_steps: float


def summarize_sweep(cells: Sequence[EvalCell], output_dir: Path) -> list[SettingRow]:
    """Pool each setting's cells from their folders; write summary.{csv,md,json}, sweep.png, settings/*.png."""
    from embodied_steer.eval.plots import plot_episodes

    groups: dict[str, list[EvalCell]] = {}
    for cell in cells:
        groups.setdefault(cell.labels["setting"], []).append(cell)
    rows: list[SettingRow] = []
    (output_dir / "settings").mkdir(parents=True, exist_ok=True)
    for setting, members in groups.items():
        pooled: list[EpisodeResult] = []
        for cell in members:
            found = read_results(cell.output_dir / "episodes.jsonl")
            pooled += [found[i] for i in sorted(found) if i < cell.episodes]
        n = len(pooled)
        successes = sum(r.success for r in pooled)
        ok = [r for r in pooled if r.status == "ok"] or pooled
        labels = {k: v for k, v in members[0].labels.items() if k not in ("seed", "setting")}
        rows.append(SettingRow(setting=setting, labels=labels, seeds=[c.labels["seed"] for c in members],
                               episodes=n, successes=successes, crashed=sum(r.status == "crashed" for r in pooled),
                               success_rate=successes / n if n else 0.0, ci95=wilson_interval(successes, n),
                               mean_steps=sum(r.steps for r in ok) / len(ok) if ok else 0.0))
        # a pooled plot numbers the episodes one after the other across the setting's seeds
        renumbered = [EpisodeResult(**{**r.__dict__, "episode": i}) for i, r in enumerate(pooled)]
        plot_episodes(renumbered, output_dir / "settings" / f"{setting}.png", title=setting)
    _write_tables(rows, output_dir)
    _plot_settings(rows, output_dir / "sweep.png")
    return rows


def _write_tables(rows: list[SettingRow], out: Path) -> None:
    import csv

    label_keys = list(dict.fromkeys(k for r in rows for k in r.labels))
    header = ["setting", *label_keys, "seeds", "episodes", "successes", "success_rate", "ci95_low", "ci95_high",
              "crashed", "mean_steps"]
    table = [[r.setting, *[r.labels.get(k) for k in label_keys], " ".join(map(str, r.seeds)), r.episodes,
              r.successes, f"{r.success_rate:.3f}", f"{r.ci95[0]:.3f}", f"{r.ci95[1]:.3f}", r.crashed,
              f"{r.mean_steps:.1f}"] for r in rows]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(table)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in table]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    (out / "summary.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2, default=str))


def format_table(rows: list[SettingRow]) -> str:
    """Plain-text table for the terminal."""
    lines = [("setting", "episodes", "success rate (95% CI, Wilson)", "crashed", "mean steps")]
    lines += [(r.setting, str(r.episodes), f"{r.success_rate:.3f}  ({r.ci95[0]:.3f}–{r.ci95[1]:.3f})", str(r.crashed),
               f"{r.mean_steps:.1f}") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    return "\n".join([sep, body[0], sep, *body[1:], sep])


def _plot_settings(rows: list[SettingRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.8))
    x = range(len(rows))
    rates = [r.success_rate for r in rows]
    err = [[r.success_rate - r.ci95[0] for r in rows], [r.ci95[1] - r.success_rate for r in rows]]
    ax.bar(x, rates, yerr=err, capsize=4, color="tab:blue", alpha=0.8)
    for i, r in enumerate(rows):
        ax.text(i + 0.05, r.success_rate + 0.02, f"{r.successes}/{r.episodes}", ha="left", fontsize=8)
    ax.set_xticks(list(x), [r.setting for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set(ylim=(0, 1), ylabel="success rate (95% CI, Wilson)", title="sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_sweep(cfg: DictConfig, *, on_result=None, progress: bool = True,
              pool=None) -> tuple[list[SettingRow], dict[str, Any]]:
    """Run a composed ``sweep`` config; returns the summary rows and run counts.

    Args:
        on_result: ``(cell, result)`` called after each episode is written (Ray executor only);
            raising from it interrupts the sweep and leaves resumable folders.
        pool: an existing :class:`~embodied_steer.distributed.WorkerPool` to run on (Ray
            executor; its Ray session must be open); default: a new pool for this sweep.
    """
    from embodied_steer.distributed.cluster import ExecutorSettings, ray_session

    settings = ExecutorSettings.from_config(OmegaConf.to_container(cfg.executor, resolve=True))
    out = Path(cfg.output_dir or f"outputs/sweep/{time.strftime('%Y%m%d-%H%M%S')}")
    cells = build_cells(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    resume = bool(cfg.resume)
    counts: dict[str, Any] = {"cells": len(cells), "executor": settings.kind, "output_dir": str(out)}
    start = time.perf_counter()
    if settings.kind == "inprocess":
        import torch

        torch.set_num_threads(settings.torch_threads)
        for cell in cells:
            run_cell_inprocess(cell, resume=resume)
    else:
        from embodied_steer.distributed.pool import WorkerPool

        if pool is not None:
            report = pool.run(cells, resume=resume, on_result=on_result, progress=progress)
        else:
            with ray_session(settings), WorkerPool(settings.workers, torch_threads=settings.torch_threads,
                                                   max_attempts=settings.max_attempts) as own:
                report = own.run(cells, resume=resume, on_result=on_result, progress=progress)
        counts.update(executed=report.executed, resumed=report.resumed, retried=report.retried,
                      worker_deaths=report.worker_deaths, duplicates_dropped=report.duplicates_dropped)
    counts["seconds"] = round(time.perf_counter() - start, 2)
    rows = summarize_sweep(cells, out)
    return rows, counts
