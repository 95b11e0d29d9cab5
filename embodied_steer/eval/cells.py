"""One evaluation *cell*: a composed ``eval`` config run for N seeded episodes into one results folder.

A plain ``embodied-steer eval`` is one cell; a sweep is a grid of them. The same cell can run in
this process (:func:`run_cell_inprocess`, the classic evaluator) or on Ray workers
(:class:`embodied_steer.distributed.WorkerPool`); both build the environment, policy and act
function with :func:`build_runtime` and write the same results folder (``config.yaml``,
``episodes.jsonl``, ``episodes.csv``, ``summary.json``, ``plot.png``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from embodied_steer.core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class EvalCell:
    """A unit of a sweep.

    Attributes:
        name: unique within a sweep; also the results folder's name.
        cfg: the composed ``eval`` config as a plain container, *unresolved* (``${asset:...}``
            paths are resolved where the cell runs, so a cluster worker finds its own copy).
        output_dir: the cell's results folder.
        labels: the grid values that define the cell (``env``, ``task``, ``policy``,
            ``seed``, the intervention settings), for the sweep's summary table.
    """

    name: str
    cfg: dict[str, Any]
    output_dir: Path
    labels: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: DictConfig, output_dir: str | Path, *, name: str | None = None,
                    labels: dict[str, Any] | None = None) -> "EvalCell":
        if cfg.get("video", {}).get("every"):
            raise ConfigError("video.every > 0 works only in a single in-process eval (executor.kind=inprocess), "
                              "not in sweeps or on Ray workers yet")
        if cfg.get("assist", {}).get("enabled"):
            raise ConfigError("assist.enabled=true works only in a single in-process eval (executor.kind=inprocess), "
                              "not in sweeps or on Ray workers yet")
        container = OmegaConf.to_container(cfg, resolve=False)
        out = Path(output_dir)
        return cls(name=name or out.name, cfg=container, output_dir=out, labels=dict(labels or {}))

    @property
    def episodes(self) -> int:
        return int(self.cfg["episodes"])

    @property
    def seed(self) -> int:
        return int(self.cfg["seed"])

    def config_yaml(self) -> str:
        """The cell's config as written to ``config.yaml`` (resolved, like ``embodied-steer eval``)."""
        from embodied_steer import catalog

        catalog.register()
        return OmegaConf.to_yaml(OmegaConf.create(self.cfg), resolve=True)

    def write_config(self, *, resume: bool) -> None:
        """Write ``config.yaml``; refuse to resume into a folder that holds another config's episodes."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / "config.yaml"
        text = self.config_yaml()
        if resume and path.exists() and (self.output_dir / "episodes.jsonl").exists():
            if _comparable(path.read_text()) != _comparable(text):
                raise ConfigError(f"{self.output_dir} holds episodes of a different configuration (see its "
                                  f"config.yaml); resume only with the same settings, or choose another output_dir")
        path.write_text(text)


def _comparable(config_yaml: str) -> dict[str, Any]:
    """A config without the keys that may change between a run and its resumption."""
    import yaml

    data = yaml.safe_load(config_yaml) or {}
    for key in ("resume", "output_dir", "executor", "torch_threads", "episodes"):  # more episodes extend a run
        data.pop(key, None)
    return data


@dataclass
class CellRuntime:
    """What a worker holds for one cell: the environment, the policy replica and its act function."""

    env: Any
    policy: Any
    act: Any
    meta: dict[str, Any]
    steering: Any = None  # the attached activation-steering handle, removed on close

    def close(self) -> None:
        if self.steering is not None:
            self.steering.remove()
            self.steering = None
        close = getattr(self.env, "close", None)
        if callable(close):
            close()


def build_runtime(cfg_container: dict[str, Any]) -> CellRuntime:
    """Build env, policy and act function of a cell (where the episodes run).

    ``meta`` carries what the results folder's ``summary.json`` needs: env and policy names, the
    render settings and the ``extra`` block (intervention settings, policy info).
    """
    from embodied_steer import catalog
    from embodied_steer.cli import (_attach_steering, _check_compatible, build_act_fn, instantiate_env,
                                    instantiate_policy, results_extra)
    from embodied_steer.eval.interventions import steered_act

    catalog.register()
    cfg = OmegaConf.create(cfg_container)
    env = instantiate_env(cfg.env, fast_render=bool(cfg.get("fast_render", False)))
    try:
        policy = instantiate_policy(cfg.policy, env)
        _check_compatible(env, policy)
        act = build_act_fn(cfg, policy, env)
        steering = _attach_steering(cfg, policy)
        if steering is not None:
            act = steered_act(steering, act)
    except BaseException:
        env.close()
        raise
    meta = {
        "env": env.spec_info.name,
        "policy": policy.info.name,
        "render_settings": env.render_settings.as_dict(),
        "extra": results_extra(cfg, policy, steering),
    }
    return CellRuntime(env, policy, act, meta, steering)


def save_meta(out: Path, meta: dict[str, Any]) -> None:
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def load_meta(out: Path) -> dict[str, Any] | None:
    path = out / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_cell_inprocess(cell: EvalCell, *, resume: bool):
    """Run a cell in this process with the classic evaluator; returns its ``EvalSummary``."""
    from embodied_steer.eval.runner import evaluate

    cell.write_config(resume=resume)
    rt = build_runtime(cell.cfg)
    try:
        save_meta(cell.output_dir, rt.meta)
        return evaluate(rt.env, rt.policy, episodes=cell.episodes, seed=cell.seed, output_dir=cell.output_dir,
                        max_steps=cell.cfg.get("max_steps"), execute_steps=cell.cfg.get("execute_steps"),
                        act=rt.act, resume=resume, extra=rt.meta["extra"])
    finally:
        rt.close()
