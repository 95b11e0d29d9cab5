"""``embodied-steer`` command line: ``eval``, ``sweep``, ``record``, ``train`` and ``adapt``, configured with Hydra.

Usage::

    embodied-steer eval env=lift policy=lift_diffusion episodes=50 seed=1000
    embodied-steer eval policy=lift_diffusion steer=eps_shift_late steer.vector_file=shift.safetensors
    embodied-steer eval executor.kind=ray executor.workers=2   # the same, episodes on Ray workers
    embodied-steer sweep grid.intervention.noise_scale=[1.0,0.5] episodes=20 output_dir=outputs/sweep/noise
    embodied-steer eval env=lift_ood policy=lift_diffusion guide=vls    # reward-guided sampling (VLS)
    embodied-steer eval --cfg                  # print the composed config and exit
    embodied-steer record env=lift policy=scripted_lift episodes=50
    embodied-steer train dataset_root=data/lift_demos steps=2000
    embodied-steer adapt env=lift policy=lift_diffusion algo=dsrl_sac total_env_steps=30000
    embodied-steer list                        # the env, policy and steer catalogues

Overrides use Hydra's syntax (``key=value``, ``+new_key=value``, ``env.cameras=[agentview]``).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from embodied_steer import catalog
from embodied_steer.core.errors import ConfigError, SteerError

log = logging.getLogger("embodied_steer")
COMMANDS = ("eval", "sweep", "record", "train", "adapt", "list")
CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose(command: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``conf/<command>.yaml`` with the catalogues and ``overrides``; clear errors on bad names."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    catalog.register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name=command, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_explain(exc)) from None
    return cfg


def _explain(exc: Exception) -> str:
    text = str(exc).strip()
    for group in catalog.GROUPS:
        if f"'{group}/" in text or f"group {group}" in text or f"{group}=" in text:
            available = ", ".join(sorted(catalog.entries(group)))
            return f"{text}\navailable {group} options: {available}"
    return text


def instantiate_env(env_cfg: DictConfig, *, fast_render: bool = False):
    """Build the environment of an ``env`` config (``_target_`` + constructor keyword arguments)."""
    from hydra.utils import instantiate

    from embodied_steer.sim.base import FAST_RENDER

    kwargs = OmegaConf.to_container(env_cfg, resolve=True)
    if fast_render:
        kwargs.update(FAST_RENDER)
    try:
        return instantiate(kwargs, _convert_="all")
    except Exception as exc:
        raise _unwrap(exc, f"cannot build env {env_cfg.get('name', env_cfg['_target_'])}") from None


def instantiate_policy(policy_cfg: DictConfig, env=None):
    """Build the policy of a ``policy`` config; factories that take ``env_spec`` receive the env's."""
    from hydra.utils import get_method, instantiate

    kwargs = OmegaConf.to_container(policy_cfg, resolve=True)
    target = get_method(kwargs["_target_"])
    extra = {}
    if env is not None and "env_spec" in inspect.signature(target).parameters:
        extra["env_spec"] = env.spec_info  # a live object: passed after Hydra converted the config
    try:
        return instantiate(kwargs, _partial_=True, _convert_="all")(**extra)
    except Exception as exc:
        raise _unwrap(exc, f"cannot build policy {kwargs['_target_']}") from None


def _unwrap(exc: Exception, context: str) -> Exception:
    """Hydra wraps constructor errors in InstantiationException; surface our own errors as they are."""
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, SteerError):
        cause = cause.__cause__
    if isinstance(cause, SteerError):
        return cause
    return ConfigError(f"{context}: {cause}")


# ---------------------------------------------------------------------------------------- commands
def cmd_eval(cfg: DictConfig) -> int:
    import torch

    if cfg.get("executor") is not None and cfg.executor.kind != "inprocess":
        return cmd_eval_distributed(cfg)
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    env = instantiate_env(cfg.env, fast_render=cfg.fast_render)
    policy = instantiate_policy(cfg.policy, env)
    _check_compatible(env, policy)
    steering = _attach_steering(cfg, policy)  # before anything is written: bad steer settings fail here
    try:
        return _run_eval(cfg, env, policy, steering)
    finally:
        if steering is not None:
            steering.remove()


def build_act_fn(cfg: DictConfig, policy, env):
    """The act function of an ``eval`` config's ``intervention`` block and ``guide`` group (before any
    activation steering or monitor wraps it); bad settings become a :class:`ConfigError`."""
    from embodied_steer.eval.interventions import make_act_fn

    guide = cfg.get("guide")
    try:
        return make_act_fn(cfg.intervention, policy, env=env,
                           guide=None if guide is None else OmegaConf.to_container(guide, resolve=True))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def results_extra(cfg: DictConfig, policy, steering) -> dict[str, Any]:
    """The ``extra`` block of a results folder's ``summary.json``: what steered the policy."""
    guide = cfg.get("guide")
    return {"intervention": OmegaConf.to_container(cfg.intervention), "policy_info": _jsonable(policy.info.extra),
            "steer": None if steering is None else _jsonable(steering.describe()),
            "guide": None if guide is None else OmegaConf.to_container(guide, resolve=True)}


def _run_eval(cfg: DictConfig, env, policy, steering) -> int:
    from embodied_steer.eval.runner import evaluate

    out = Path(cfg.output_dir or f"outputs/eval/{env.spec_info.name}-{policy.info.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    act = build_act_fn(cfg, policy, env)
    steered = None
    if steering is not None:
        from embodied_steer.eval.interventions import steered_act

        (out / "steer.json").write_text(json.dumps(
            {"name": cfg.steer.get("name"), "hooks": steering.describe()}, indent=2, default=str))
        act = steered = steered_act(steering, act, out / "steer.jsonl")
    monitor = None
    if cfg.get("assist") is not None:
        from embodied_steer.realm.monitor import monitor_from_settings

        try:
            monitor = monitor_from_settings(OmegaConf.to_container(cfg.assist, resolve=True), policy, out)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if monitor is not None:
            act = monitor.wrap(act)
    summary = evaluate(
        env, policy, episodes=int(cfg.episodes), seed=int(cfg.seed), output_dir=out,
        max_steps=cfg.max_steps, execute_steps=cfg.execute_steps, act=act,
        video_every=int(cfg.video.every), video_fps=int(cfg.video.fps), resume=bool(cfg.resume),
        extra=results_extra(cfg, policy, steering),
    )
    if steered is not None:
        steered.close()
    print(summary.table())
    if monitor is not None:
        from embodied_steer.realm.monitor import finish_monitor

        assist = finish_monitor(monitor, out, int(cfg.assist.get("plot_episodes", 3)))
        print(f"assistance: {assist['recommended']} over {assist['queries']} queries "
              f"(estimate {assist['estimate_ms_median']:.1f} ms, sampling {assist['sample_ms_median']:.1f} ms median)")
    print(f"results: {out}")
    env.close()
    return 0


def _attach_steering(cfg: DictConfig, policy):
    """Attach the ``steer`` group's interventions (``None`` for ``steer=none``); errors up front when
    the policy lacks the ACTIVATIONS point or a name / index / width does not fit."""
    steer_cfg = cfg.get("steer")
    if steer_cfg is None:
        return None
    from embodied_steer.steering.config import attach_from_config

    try:
        settings = OmegaConf.to_container(steer_cfg, resolve=True)
    except Exception as exc:  # an unset interpolation, e.g. a required cluster_file
        raise ConfigError(f"steer config: {exc}") from None
    handle = attach_from_config(policy, settings)
    if handle is not None:
        log.info("steering %s: %d hooks on %d interventions", settings.get("name"), len(handle.sites),
                 len(handle.interventions))
    return handle

def cmd_eval_distributed(cfg: DictConfig) -> int:
    """``eval`` with ``executor.kind=ray``: the same results folder, episodes on Ray workers."""
    from embodied_steer.distributed import ExecutorSettings, WorkerPool, ray_session
    from embodied_steer.eval.cells import EvalCell

    settings = ExecutorSettings.from_config(OmegaConf.to_container(cfg.executor, resolve=True))
    env_name = cfg.env.get("name") or "env"
    out = Path(cfg.output_dir or f"outputs/eval/{env_name}-{cfg.policy.get('name') or 'policy'}-{time.strftime('%Y%m%d-%H%M%S')}")
    cell = EvalCell.from_config(cfg, out)
    with ray_session(settings), WorkerPool(settings.workers, torch_threads=settings.torch_threads,
                                           max_attempts=settings.max_attempts) as pool:
        report = pool.run([cell], resume=bool(cfg.resume))
    print(report.summaries[cell.name].table())
    print(f"ray: {report.executed} episodes run on {settings.workers} workers in {report.seconds:.1f} s "
          f"({report.resumed} resumed, {report.retried} retried after {report.worker_deaths} worker deaths)")
    print(f"results: {out}")
    return 0


def cmd_sweep(cfg: DictConfig) -> int:
    from embodied_steer.eval.sweep import format_table, run_sweep

    rows, counts = run_sweep(cfg)
    print(format_table(rows))
    if counts["executor"] == "ray":
        print(f"ray: {counts['executed']} episodes run, {counts['resumed']} resumed, {counts['retried']} retried "
              f"after {counts['worker_deaths']} worker deaths, in {counts['seconds']:.1f} s")
    print(f"results: {counts['output_dir']} (summary.md, sweep.png, settings/, one folder per cell)")
    return 0


def _check_compatible(env, policy) -> None:
    bounds = policy.info.action_bounds
    env_dim = int(env.action_space.shape[0])
    if bounds is not None and bounds.dim != env_dim:
        raise ConfigError(f"policy '{policy.info.name}' acts in {bounds.dim} dimensions, env '{env.spec_info.name}' in {env_dim}")
    spaces = env.observation_space.spaces
    for key, want in (("state", policy.info.state_dim), ("env_state", policy.info.env_state_dim)):
        space = spaces.get(key)
        if want is None:
            continue
        if space is None:
            raise ConfigError(f"policy '{policy.info.name}' reads {key}, env '{env.spec_info.name}' provides none")
        if space.shape[0] != want:
            raise ConfigError(f"policy '{policy.info.name}' expects {key} of {want} values, "
                              f"env '{env.spec_info.name}' gives {space.shape[0]}")


def cmd_record(cfg: DictConfig) -> int:
    from embodied_steer.data.record import record_episodes

    env = instantiate_env(cfg.env)
    policy = instantiate_policy(cfg.policy, env)
    name = env.spec_info.name
    summary = record_episodes(
        env, policy, cfg.output_dir or f"data/{name}_demos", repo_id=cfg.repo_id or f"local/{name}_demos",
        num_episodes=int(cfg.episodes), seed=int(cfg.seed), only_successful=bool(cfg.only_successful),
        overwrite=bool(cfg.overwrite),
    )
    print(f"recorded {summary.episodes_saved} episodes ({summary.frames} frames, "
          f"{summary.episodes_tried} attempts) to {summary.root}")
    env.close()
    return 0


def cmd_train(cfg: DictConfig) -> int:
    import torch

    from embodied_steer.training.diffusion import DiffusionTrainConfig, train_diffusion

    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    fields = OmegaConf.to_container(cfg, resolve=True)
    fields.pop("torch_threads", None)
    fields["down_dims"] = tuple(fields["down_dims"])
    if not Path(fields["dataset_root"], "meta", "info.json").is_file():
        raise ConfigError(f"no LeRobot dataset at {fields['dataset_root']} (record one with: embodied-steer record)")
    out = train_diffusion(DiffusionTrainConfig(**fields))
    print(f"saved policy to {out}")
    return 0


def cmd_adapt(cfg: DictConfig) -> int:
    from embodied_steer.dsrl.cli import adapt_from_config

    return adapt_from_config(cfg)


def cmd_list(_: DictConfig | None = None) -> int:
    for group in catalog.GROUPS:
        print(f"{group}:")
        for name, path in sorted(catalog.entries(group).items()):
            first = path.read_text().splitlines()[0] if path.read_text() else ""
            print(f"  {name:<22} {first.lstrip('# ')}")
    return 0


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("EMBODIED_STEER_LOG", "INFO"), format="[%(name)s] %(message)s")
    os.environ.setdefault("MUJOCO_GL", "egl")
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    command, overrides = argv[0], argv[1:]
    try:
        if command == "list":
            return cmd_list()
        show = "--cfg" in overrides
        cfg = compose(command, [o for o in overrides if o != "--cfg"])
        if show:
            print(OmegaConf.to_yaml(cfg))
            return 0
        return {"eval": cmd_eval, "sweep": cmd_sweep, "record": cmd_record, "train": cmd_train,
                "adapt": cmd_adapt}[command](cfg)
    except SteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
