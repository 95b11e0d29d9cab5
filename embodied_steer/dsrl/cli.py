"""``embodied-steer adapt``: build env + base policy from the catalogues and run :func:`run_adapt`."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from embodied_steer.core.errors import ConfigError
from embodied_steer.dsrl.progress import BEST_ADAPTER, read_selection
from embodied_steer.dsrl.train import AdaptConfig, run_adapt


def adapt_config(cfg: DictConfig, default_dir: str) -> AdaptConfig:
    fields = {f.name for f in dataclasses.fields(AdaptConfig)}
    values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in fields}
    values["output_dir"] = values.get("output_dir") or default_dir
    values["hidden"] = list(values.get("hidden", [256, 256]))
    return AdaptConfig(**values)


def adapt_from_config(cfg: DictConfig) -> int:
    import torch

    from embodied_steer.cli import _check_compatible, instantiate_env, instantiate_policy

    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    fast = bool(cfg.get("fast_render", True))
    probe = instantiate_env(cfg.env, fast_render=fast)
    env_name = probe.spec_info.name
    policy = None
    if cfg.algo != "raw_sac":
        policy = instantiate_policy(cfg.policy, probe)
        _check_compatible(probe, policy)
    probe.close()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = adapt_config(cfg, f"outputs/adapt/{env_name}-{cfg.policy.get('name', 'policy')}-{cfg.algo}-{stamp}")
    if cfg.resume and not cfg.output_dir:
        raise ConfigError("resume=true needs output_dir=<the run folder to continue>")
    base_config = OmegaConf.to_container(cfg.policy, resolve=False)
    final = run_adapt(run, lambda: instantiate_env(cfg.env, fast_render=fast), policy, base_config)
    out = Path(run.output_dir)
    if final:
        print(f"{run.algo}: success {final['success_rate']:.2f} at {final['env_steps']} env steps "
              f"({final['wall_seconds']:.0f} s)")
    if (out / "adapter").is_dir():
        print(f"adapter: {out / 'adapter'}  (eval it: embodied-steer eval policy=dsrl policy.adapter_path={out / 'adapter'})")
    best = read_selection(out)
    if best is not None:
        print(f"best evaluation: {best['success_rate']:.2f} at {best['env_steps']} env steps on seeds "
              f"{best['eval_seed']}+ -> {out / BEST_ADAPTER} (measure it on other seeds before quoting it)")
    print(f"results: {out}")
    return 0
