"""Run a DSRL adaptation: online DSRL-SAC, DSRL-NA (online or from a LeRobot dataset), or the
raw-action SAC baseline, with periodic evaluation, logs, checkpoints and resume.

Output folder layout: see :mod:`embodied_steer.dsrl.progress`, plus ``checkpoint/`` (the last
checkpoint: networks as safetensors, optimiser states, replay buffer, counters) and ``adapter/``
(the adapted policy as of the last checkpoint, loadable with :meth:`DSRLPolicy.from_adapter` / a
policy config); ``adapter_best/`` is the one of the best evaluation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.policy import SteerablePolicy
from embodied_steer.dsrl.horizon import TrainingHorizon
from embodied_steer.dsrl.latent import LatentNoiseMap, check_basis
from embodied_steer.dsrl.na import NA_ACTOR_INITS, actor_learning_rate, check_ema_warmup, check_mc_target, check_rate
from embodied_steer.dsrl.policy import ACT_MODES
from embodied_steer.dsrl.progress import Counters, Progress, truncate_logs, write_folder_atomically
from embodied_steer.dsrl.raw import RawActionEnv
from embodied_steer.dsrl.sac import SACSettings, build_sac, load_sac, sac_actor_state, sac_deterministic, save_sac
from embodied_steer.dsrl.sensitivity import check_scale
from embodied_steer.dsrl.shaping import check_shaping, make_potential
from embodied_steer.dsrl.wrapper import LatentNoiseEnv

log = logging.getLogger("embodied_steer.dsrl")
ALGOS = ("dsrl_sac", "dsrl_na", "raw_sac")


@dataclass
class AdaptConfig:
    """Settings of one run (the ``adapt`` command's config, minus env/policy).

    Budget and schedule are in *environment* steps (a DSRL agent step executes a whole chunk).
    """

    algo: str = "dsrl_sac"
    output_dir: str = "outputs/adapt/run"
    total_env_steps: int = 30_000
    eval_every: int = 3_000
    eval_episodes: int = 10
    eval_seed: int = 100_000
    checkpoint_every: int = 2_000
    keep_eval_adapters: bool = False
    log_every: int = 1_000
    seed: int = 0
    resume: bool = False
    # latent MDP
    bound: float = 1.5
    latent_mode: str = "full"
    latent_dim: int | None = None
    latent_basis: str = "random"
    latent_basis_states: int = 64
    latent_basis_scale: str = "whiten"
    gamma: float = 0.99
    use_env_state: bool = True
    train_horizon: int | None = None
    train_horizon_cut: str = "truncate"
    reward_shaping: str = "none"
    shaping_scale: float = 0.5
    shaping_sharpness: float = 10.0
    # learner
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    lr: float = 3e-4
    batch_size: int = 256
    tau: float = 0.005
    n_critics: int = 2
    utd: int = 2
    learning_starts: int = 100
    buffer_size: int = 200_000
    init_temperature: float = 1.0
    target_entropy: Any = "auto"
    warmup_noise: str = "base"
    # DSRL-NA only
    na_decode_batch: int = 64
    na_layernorm: bool = True
    na_backup: str = "action"
    na_distill_actor_share: float = 0.0
    na_prior: str = "none"
    na_actor_init: str = "default"
    na_actor_lr: float | None = None
    na_mc_bound: bool = False
    na_mc_mix: float = 0.0
    na_critic_utd: int = 1
    na_select: int = 1
    na_select_explore: int = 1
    na_act: str = "mean"
    na_explore_deployed_share: float = 0.0
    na_actor_ema: float = 0.0
    na_actor_ema_warmup: bool = False
    na_critic_dropout: float = 0.0
    offline_dataset: str | None = None
    offline_updates: int = 0

    @property
    def entropy_target(self) -> float | None:
        """``target_entropy`` as a number, ``None`` for ``"auto"`` (each algorithm's ``-latent_dim``)."""
        return None if self.target_entropy == "auto" else float(self.target_entropy)

    @property
    def training_horizon(self) -> TrainingHorizon:
        """The training episodes' limit (evaluation keeps the environment's horizon)."""
        return TrainingHorizon(None if self.train_horizon is None else int(self.train_horizon), self.train_horizon_cut)

    def check(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        offline_only = self.algo == "dsrl_na" and self.offline_dataset and self.offline_updates > 0
        if self.total_env_steps < (0 if offline_only else 1):
            raise ConfigError(f"total_env_steps must be >= 1 (0 only for offline-only dsrl_na), got {self.total_env_steps}")
        self.training_horizon  # checks train_horizon / train_horizon_cut
        check_basis(self.latent_basis)
        if self.latent_basis != "random" and (self.latent_mode != "project" or self.algo == "raw_sac"):
            raise ConfigError(f"latent_basis={self.latent_basis} needs a DSRL algo with latent_mode=project, got "
                              f"algo={self.algo} latent_mode={self.latent_mode}")
        check_scale(self.latent_basis_scale)
        if not (isinstance(self.latent_basis_states, int) and self.latent_basis_states >= 1):
            raise ConfigError(f"latent_basis_states must be an integer >= 1, got {self.latent_basis_states!r}")
        check_shaping(self.reward_shaping, self.shaping_scale, self.shaping_sharpness)
        try:
            self.entropy_target
        except (TypeError, ValueError):
            raise ConfigError(f"target_entropy must be 'auto' or a number, got {self.target_entropy!r}") from None
        if self.na_act not in ACT_MODES:
            raise ConfigError(f"na_act must be one of {ACT_MODES}, got {self.na_act!r}")
        if self.na_actor_init not in NA_ACTOR_INITS:
            raise ConfigError(f"na_actor_init must be one of {NA_ACTOR_INITS}, got {self.na_actor_init!r}")
        if self.na_actor_init != "default" and self.algo != "dsrl_na":
            raise ConfigError(f"na_actor_init={self.na_actor_init} needs algo=dsrl_na, got {self.algo}")
        if self.na_actor_lr is not None:
            actor_learning_rate(self.lr, self.na_actor_lr)
            if self.algo != "dsrl_na":
                raise ConfigError(f"na_actor_lr needs algo=dsrl_na, got {self.algo} (it sets DSRL-NA's actor alone)")
        if self.na_act != "mean" and self.algo != "dsrl_na":
            raise ConfigError(f"na_act={self.na_act} needs algo=dsrl_na, got {self.algo}")
        check_mc_target(self.na_mc_bound, self.na_mc_mix)
        check_rate("na_actor_ema", self.na_actor_ema, "deploy the trained actor")
        check_ema_warmup(self.na_actor_ema_warmup, self.na_actor_ema)
        check_rate("na_critic_dropout", self.na_critic_dropout, "no dropout")
        share = self.na_explore_deployed_share
        if not (isinstance(share, (int, float)) and 0.0 <= float(share) <= 1.0):
            raise ConfigError(f"na_explore_deployed_share must be a number in [0, 1], got {share!r}")
        for name, why in (("na_mc_mix", ""), ("na_actor_ema", ""),
                          ("na_critic_dropout", " (SB3's SAC critic has no dropout)"),
                          ("na_explore_deployed_share",
                           " (SB3's SAC collects its own rollouts with the stochastic actor)")):
            if getattr(self, name) > 0 and self.algo != "dsrl_na":
                raise ConfigError(f"{name} > 0 needs algo=dsrl_na, got {self.algo}{why}")
        if self.offline_dataset and not (Path(self.offline_dataset) / "meta" / "info.json").is_file():
            # Checked here, before the run folder is written, so a typo does not leave a run to clean up.
            raise ConfigError(f"offline_dataset={self.offline_dataset}: no LeRobot dataset there (no meta/info.json); "
                              "`embodied-steer record env=lift policy=scripted_lift` writes one to data/lift_demos")
        if self.keep_eval_adapters and self.algo == "raw_sac":
            raise ConfigError("keep_eval_adapters=true needs a DSRL algo (dsrl_sac or dsrl_na): raw_sac has no noise "
                              "adapter to keep; its evaluations are in curve.jsonl")
        for name in ("na_select", "na_select_explore"):
            if int(getattr(self, name)) > 1 and self.algo != "dsrl_na":
                raise ConfigError(f"{name} > 1 needs algo=dsrl_na (its noise critic scores the candidates), got {self.algo}")
        for name in ("eval_every", "eval_episodes", "checkpoint_every", "log_every", "batch_size", "utd", "na_select",
                     "na_select_explore"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


def _sb3_callback(progress: Progress, model, ckpt: Path, on_checkpoint: Callable[[], None],
                  on_eval: Callable[[dict], None]):
    from stable_baselines3.common.callbacks import BaseCallback

    class _Callback(BaseCallback):
        """Counts env steps, logs, evaluates and checkpoints after each rollout step is stored."""

        def __init__(self) -> None:
            super().__init__()
            self.finished = False
            self.episode_return = 0.0

        def _on_step(self) -> bool:
            if self.finished:
                return False
            info = self.locals["infos"][0]
            self.episode_return += float(info.get("task_reward", self.locals["rewards"][0]))
            end = bool(self.locals["dones"][0])
            progress.record_step(int(info.get("env_steps", 1)), end, bool(info.get("is_success", False)),
                                 self.episode_return)
            if end:
                self.episode_return = 0.0
            return True

        def _on_rollout_end(self) -> None:
            # The transition is in the replay buffer now: a checkpoint here loses nothing.
            progress.c.updates = int(model._n_updates)
            progress.maybe_log()
            if progress.due_eval():
                on_eval(progress.run_eval(sac_deterministic(model)))
            if progress.due_checkpoint():
                progress.mark_checkpoint()
                write_folder_atomically(ckpt, lambda tmp: save_sac(model, tmp, {"progress": progress.counters_dict()}))
                on_checkpoint()
            if progress.done:
                self.finished = True

    return _Callback()


def run_adapt(cfg: AdaptConfig, make_env: Callable[[], Any], policy: SteerablePolicy | None,
              base_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train, evaluating and checkpointing on the way; return the final evaluation row.

    Args:
        cfg: the run's settings.
        make_env: builds a fresh toolkit environment (called twice: training and evaluation).
        policy: the frozen base policy (``None`` only for ``raw_sac``).
        base_config: the base policy's config, stored with the adapter so that it can be rebuilt.
    """
    cfg.check()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(cfg.output_dir)
    ckpt = out / "checkpoint"
    resuming = cfg.resume and (ckpt / "counters.json").is_file()
    if out.exists() and not cfg.resume and any(out.iterdir()):
        raise ConfigError(f"output folder {out} is not empty: pass resume=true to continue it or choose another")

    if cfg.algo == "raw_sac":
        train_env = RawActionEnv(make_env(), use_env_state=cfg.use_env_state, horizon=cfg.training_horizon,
                                 gamma=cfg.gamma)
        eval_env = RawActionEnv(make_env(), use_env_state=cfg.use_env_state)
        gamma = cfg.gamma
    else:
        if policy is None:
            raise ConfigError(f"{cfg.algo} needs a base policy")
        kw = dict(bound=cfg.bound, latent_mode=cfg.latent_mode, latent_dim=cfg.latent_dim, gamma=cfg.gamma,
                  use_env_state=cfg.use_env_state, projection_seed=cfg.seed, warmup_noise=cfg.warmup_noise)
        train_env = LatentNoiseEnv(make_env(), policy, horizon=cfg.training_horizon, **kw)
        eval_env = LatentNoiseEnv(make_env(), policy, check_determinism=False, **kw)
        gamma = train_env.chunk_discount
    try:
        # Only training transitions are shaped: evaluation reports the task's own success and return.
        # Built (and refused) before anything is written to the run folder.
        train_env.shaping = make_potential(cfg.reward_shaping, train_env.features, cfg.shaping_scale,
                                           cfg.shaping_sharpness)
        # check() allows a computed basis only for the DSRL algos, whose envs have a latent
        computed = _latent_basis(cfg, train_env, out, resuming) if cfg.latent_basis != "random" else None
        if computed is not None:
            train_env.use_latent(computed)
            eval_env.use_latent(computed)
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapt_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        if computed is not None:
            tmp = out / (LATENT_FILE + ".tmp")
            tmp.write_text(json.dumps(computed.to_dict()))
            tmp.replace(out / LATENT_FILE)  # atomic: a kill leaves the old file or the new one
        if cfg.algo == "dsrl_na":
            from embodied_steer.dsrl.na import run_na

            return run_na(cfg, train_env, eval_env, out, resuming, base_config)
        return _run_sb3(cfg, train_env, eval_env, out, resuming, gamma, base_config)
    finally:
        train_env.close()
        eval_env.close()


LATENT_FILE = "latent.json"
"""The run's latent map (``LatentNoiseMap.to_dict``), written before training starts: a computed
basis is read back from it on resume instead of being computed again."""


def _latent_basis(cfg: AdaptConfig, train_env: LatentNoiseEnv, out: Path, resuming: bool) -> LatentNoiseMap:
    """The run's projected latent with a computed basis: the one saved in the run folder when
    resuming, else the sensitivity basis averaged over ``latent_basis_states`` agent observations —
    the offline dataset's, or (without one) the first observations of as many training-env resets
    (a reset costs no environment step, and every training or evaluation episode resets with its
    own seed afterwards, so these resets change none of them)."""
    saved = out / LATENT_FILE
    if resuming and saved.is_file():
        latent = LatentNoiseMap.from_dict(json.loads(saved.read_text()))
        scaled = "whiten" if latent.scales is not None else "unit"
        if (latent.basis, scaled) != (cfg.latent_basis, cfg.latent_basis_scale):
            raise ConfigError(f"{saved} holds a {latent.basis} basis scaled '{scaled}'; this run asks for "
                              f"latent_basis={cfg.latent_basis} latent_basis_scale={cfg.latent_basis_scale}")
        log.info("latent basis: %s, read from %s", latent.basis, saved)
        return latent
    from embodied_steer.dsrl.sensitivity import compute_latent_map

    if cfg.offline_dataset:
        from embodied_steer.dsrl.na import offline_transitions

        k = train_env.execute_steps
        rows = offline_transitions(cfg.offline_dataset, train_env.features, k, cfg.gamma,
                                   int(np.prod(train_env.env.action_space.shape)))
        obs = np.stack([row[0] for row in rows])
    else:
        obs = np.stack([train_env.reset(seed=BASIS_RESET_SEED + cfg.seed * 1000 + i)[0]
                        for i in range(cfg.latent_basis_states)])
    latent, _ = compute_latent_map(train_env, obs, cfg.latent_basis_states, cfg.seed, cfg.latent_basis_scale)
    return latent


BASIS_RESET_SEED = 900_000_000
"""First reset seed of the states a basis is computed from without a dataset."""


def _run_sb3(cfg: AdaptConfig, train_env, eval_env, out: Path, resuming: bool, gamma: float,
             base_config: Mapping[str, Any] | None) -> dict[str, Any]:
    settings = SACSettings(hidden=list(cfg.hidden), lr=cfg.lr, batch_size=cfg.batch_size, tau=cfg.tau, gamma=gamma,
                           n_critics=cfg.n_critics, utd=cfg.utd, learning_starts=cfg.learning_starts,
                           buffer_size=cfg.buffer_size, init_temperature=cfg.init_temperature,
                           target_entropy="auto" if cfg.entropy_target is None else cfg.entropy_target)
    model = build_sac(train_env, settings, cfg.seed, str(out / "tb"))
    ckpt = out / "checkpoint"
    counters = None
    if resuming:
        saved = load_sac(model, ckpt)
        counters = Counters(**saved["progress"])
        truncate_logs(out, counters.env_steps)
        log.info("resumed %s at %d env steps (%d agent steps, replay buffer %d)", cfg.algo, counters.env_steps,
                 model.num_timesteps, model.replay_buffer.size())
    progress = Progress(out, algo=cfg.algo, eval_env=eval_env, eval_episodes=cfg.eval_episodes, eval_seed=cfg.eval_seed,
                        eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
                        total_env_steps=cfg.total_env_steps, counters=counters)

    def export(folder: Path) -> None:
        if isinstance(train_env, LatentNoiseEnv):
            from embodied_steer.dsrl.networks import sb3_actor_to_noise_actor
            from embodied_steer.dsrl.policy import save_adapter

            actor = sb3_actor_to_noise_actor(sac_actor_state(model), train_env.features.dim,
                                             int(train_env.latent.latent_dim), cfg.hidden, train_env.latent.bound)
            save_adapter(folder, actor, train_env.latent, train_env.features, hidden=cfg.hidden,
                         base_config=base_config, algo=cfg.algo, execute_steps=train_env.execute_steps)

    if progress.done:
        log.info("%s already finished (%d env steps)", cfg.algo, progress.c.env_steps)
    else:
        def on_eval(row: dict) -> None:
            if isinstance(train_env, LatentNoiseEnv):  # raw_sac has no noise adapter
                progress.keep_eval_adapters(row, export, cfg.keep_eval_adapters)

        callback = _sb3_callback(progress, model, ckpt, lambda: export(out / "adapter"), on_eval)
        model.learn(total_timesteps=10**9, callback=callback, reset_num_timesteps=not resuming, tb_log_name=cfg.algo)
    progress.close()
    from embodied_steer.dsrl.progress import read_curve

    curve = read_curve(out)
    return curve[-1] if curve else {}
