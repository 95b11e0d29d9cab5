"""Train the small token VLA (:mod:`embodied_steer.adapters.token_vla`) on a LeRobot dataset, on CPU.

Data: every frame of a state-only LeRobot dataset (``observation.state``,
``observation.environment_state``, ``action``) read straight from its parquet files. Each batch
uses one instruction variant (drawn from :data:`~embodied_steer.adapters.token_vla.INSTRUCTIONS`),
and teacher-forces the targets ``<z-word> <speed-word> a_0 … a_6 <eos>``.

Loss: cross-entropy on the plan words and ``<eos>``; on the action tokens, cross-entropy against a
Gaussian-smoothed target over neighbouring bins (``bin_sigma`` bins; 0 = one-hot, OpenVLA's loss).
The smoothing tells the model that bin 130 is closer to 128 than bin 10 is — useful with ~10k
frames and noisy scripted demonstrations. Checkpoints (``model.safetensors`` …) are written every
``save_every`` steps and at the end, so an interrupted run leaves a usable model.

Command line::

    python -m embodied_steer.training.token_vla --dataset data/lift_vla_demos --out outputs/train/lift_token_vla
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embodied_steer.adapters.token_vla import (
    INSTRUCTIONS,
    N_BINS,
    TokenVLA,
    VLAConfig,
    VLATokenizer,
    build_tokenizer,
    decode,
    save_checkpoint,
)

log = logging.getLogger(__name__)


@dataclass
class TokenVLATrainConfig:
    dataset: str
    out: str = "outputs/train/lift_token_vla"
    steps: int = 4000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    bin_sigma: float = 2.0
    seed: int = 0
    val_episodes: int = 10
    save_every: int = 250
    log_every: int = 50
    max_minutes: float | None = None
    """Wall-time budget: training stops when it is spent, and the cosine learning-rate schedule
    runs over whichever budget (steps or time) ends first, so a time-capped run still anneals."""
    torch_threads: int = 1
    model: dict = field(default_factory=dict)
    """Overrides of :class:`VLAConfig` sizes (hidden_size, num_layers, …)."""


def load_frames(root: str | Path) -> dict[str, np.ndarray]:
    """All frames of a local LeRobot dataset: ``state``, ``env_state``, ``action``, ``episode``."""
    import pandas as pd

    files = sorted(glob.glob(str(Path(root) / "data" / "*" / "*.parquet")))
    if not files:
        raise FileNotFoundError(f"no LeRobot dataset parquet files under {root}/data")
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return {
        "state": np.stack(df["observation.state"].to_numpy()).astype(np.float32),
        "env_state": np.stack(df["observation.environment_state"].to_numpy()).astype(np.float32),
        "action": np.stack(df["action"].to_numpy()).astype(np.float32),
        "episode": df["episode_index"].to_numpy().astype(np.int64),
    }


def make_model(frames: dict[str, np.ndarray], overrides: dict | None = None) -> tuple[TokenVLA, VLATokenizer]:
    """A fresh model whose normalisation statistics come from ``frames``."""
    obs = np.concatenate([frames["state"], frames["env_state"]], axis=1)
    cfg = VLAConfig(
        state_dim=frames["state"].shape[1],
        env_state_dim=frames["env_state"].shape[1],
        action_dim=frames["action"].shape[1],
        obs_mean=obs.mean(0).tolist(),
        obs_std=np.maximum(obs.std(0), 1e-3).tolist(),
        action_q01=np.quantile(frames["action"], 0.01, axis=0).tolist(),
        action_q99=np.quantile(frames["action"], 0.99, axis=0).tolist(),
    )
    for key, value in (overrides or {}).items():
        setattr(cfg, key, type(getattr(cfg, key))(value))
    tokenizer = VLATokenizer(build_tokenizer(), cfg)
    return TokenVLA(cfg, tokenizer.vocab_size), tokenizer


def targets(tokenizer: VLATokenizer, actions: np.ndarray) -> np.ndarray:
    """``(N, 2 + D + 1)`` target ids: plan words, action bins, ``<eos>``."""
    zi, si = tokenizer.plan_words(actions)
    z = np.asarray(tokenizer.z_ids)[zi]
    s = np.asarray(tokenizer.speed_ids)[si]
    bins = tokenizer.to_bins(actions) + tokenizer.bin_offset
    eos = np.full(len(actions), tokenizer.eos_id)
    return np.concatenate([z[:, None], s[:, None], bins, eos[:, None]], axis=1)


def loss_fn(logits: torch.Tensor, tgt: torch.Tensor, tokenizer: VLATokenizer, action_dim: int, bin_sigma: float) -> dict[str, torch.Tensor]:
    logp = F.log_softmax(logits.float(), dim=-1)
    a0, a1 = 2, 2 + action_dim
    word_pos = [0, 1, a1]
    word_loss = F.nll_loss(logp[:, word_pos].reshape(-1, logp.shape[-1]), tgt[:, word_pos].reshape(-1))
    bins = (tgt[:, a0:a1] - tokenizer.bin_offset).float()  # (B, D)
    lp_bins = logp[:, a0:a1, tokenizer.bin_offset :]  # (B, D, 256)
    if bin_sigma > 0:
        grid = torch.arange(N_BINS, dtype=torch.float32)
        w = torch.exp(-0.5 * ((grid - bins[..., None]) / bin_sigma) ** 2)
        w = w / w.sum(-1, keepdim=True)
        # mass outside the bin tokens counts as wrong: the soft target lives on bins only
        action_loss = -(w * lp_bins).sum(-1).mean()
    else:
        action_loss = F.nll_loss(logp[:, a0:a1].reshape(-1, logp.shape[-1]), tgt[:, a0:a1].reshape(-1))
    return {"loss": word_loss * 3 / (3 + action_dim) + action_loss * action_dim / (3 + action_dim),
            "word": word_loss, "action": action_loss}


@torch.no_grad()
def validate(model: TokenVLA, tokenizer: VLATokenizer, obs: torch.Tensor, actions: np.ndarray, limit: int = 512) -> dict[str, float]:
    """Greedy decoding on held-out frames: mean |action error| (env units), plan-word accuracy."""
    model.eval()
    idx = np.linspace(0, len(obs) - 1, min(limit, len(obs))).astype(int)
    out = decode(model, tokenizer, obs[idx], INSTRUCTIONS[0])
    pred = tokenizer.from_bins(out["bins"].numpy())
    zi, si = tokenizer.plan_words(actions[idx])
    plan_ok = (out["plan"][:, 0].numpy() == np.asarray(tokenizer.z_ids)[zi]).mean()
    err = np.abs(pred - actions[idx])
    model.train()
    return {"val_mae": float(err[:, :3].mean()), "val_mae_z": float(err[:, 2].mean()),
            "val_gripper_acc": float((np.sign(pred[:, 6]) == np.sign(actions[idx, 6])).mean()),
            "val_plan_acc": float(plan_ok)}


def train(cfg: TokenVLATrainConfig) -> Path:
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    frames = load_frames(cfg.dataset)
    episodes = np.unique(frames["episode"])
    n_val = min(cfg.val_episodes, len(episodes) - 1)  # always keep one episode for training
    val_eps = episodes[len(episodes) - n_val :] if n_val > 0 else episodes[:0]
    is_val = np.isin(frames["episode"], val_eps)
    train_frames = {k: v[~is_val] for k, v in frames.items()}
    model, tokenizer = make_model(train_frames, cfg.model)
    obs_all = torch.as_tensor(np.concatenate([frames["state"], frames["env_state"]], axis=1))
    obs_tr, obs_val = obs_all[~is_val], obs_all[is_val]
    act_val = frames["action"][is_val]
    tgt_tr = torch.as_tensor(targets(tokenizer, train_frames["action"]))
    prompts = [torch.tensor(tokenizer.prompt_ids(text)) for text in INSTRUCTIONS]
    n_params = sum(p.numel() for p in model.parameters())
    log.info("token VLA: %d parameters, vocab %d (last %d = action bins), %d train / %d val frames",
             n_params, tokenizer.vocab_size, N_BINS, len(obs_tr), len(obs_val))
    zi, si = tokenizer.plan_words(train_frames["action"])
    log.info("plan labels: up/down/hold = %s, fast/slow = %s", np.bincount(zi, minlength=3).tolist(), np.bincount(si, minlength=2).tolist())

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    start = time.perf_counter()

    def progress(s: int) -> float:
        # cosine over whichever budget runs out first: steps, or wall time (max_minutes)
        frac = s / cfg.steps
        if cfg.max_minutes:
            frac = max(frac, (time.perf_counter() - start) / (cfg.max_minutes * 60))
        return min(1.0, frac)

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * max(0.02, 0.5 * (1 + math.cos(math.pi * progress(s))))
    )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    log_path = out / "train_log.csv"
    fields = ["step", "seconds", "loss", "word", "action", "lr", "val_mae", "val_mae_z", "val_gripper_acc", "val_plan_acc"]
    with log_path.open("w", newline="") as fh:
        csv.writer(fh).writerow(fields)
    model.train()
    running: dict[str, float] = {}
    step = 0
    for step in range(1, cfg.steps + 1):
        idx = torch.as_tensor(rng.integers(0, len(obs_tr), cfg.batch_size))
        prompt = prompts[int(rng.integers(len(prompts)))][None].expand(cfg.batch_size, -1)
        logits = model.forward_train(obs_tr[idx], prompt, tgt_tr[idx])
        losses = loss_fn(logits, tgt_tr[idx], tokenizer, model.config.action_dim, cfg.bin_sigma)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        elapsed = time.perf_counter() - start
        out_of_time = cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60
        if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
            n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every or 1
            row = {k: running[k] / n for k in running}
            running = {}
            if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
                row.update(validate(model, tokenizer, obs_val, act_val) if len(obs_val) else {})
                save_checkpoint(out, model, tokenizer, extra={"trained_steps": step, "dataset": str(cfg.dataset)})
            with log_path.open("a", newline="") as fh:
                csv.writer(fh).writerow([step, f"{elapsed:.1f}", *(f"{row.get(k, float('nan')):.4f}" for k in fields[2:5]),
                                         f"{sched.get_last_lr()[0]:.2e}", *(f"{row.get(k, float('nan')):.4f}" for k in fields[6:])])
            log.info("step %d  %.0fs  %s", step, elapsed, "  ".join(f"{k}={v:.4f}" for k, v in row.items()))
        if out_of_time:
            log.info("stopping at step %d: max_minutes=%s reached", step, cfg.max_minutes)
            break
    model.eval()
    save_checkpoint(out, model, tokenizer, extra={"trained_steps": step, "dataset": str(cfg.dataset)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", default="outputs/train/lift_token_vla")
    for name in ("steps", "batch_size", "seed", "val_episodes", "save_every", "log_every", "warmup", "torch_threads"):
        p.add_argument(f"--{name}", type=int, default=TokenVLATrainConfig.__dataclass_fields__[name].default)
    for name in ("lr", "weight_decay", "bin_sigma", "max_minutes"):
        p.add_argument(f"--{name}", type=float, default=TokenVLATrainConfig.__dataclass_fields__[name].default)
    p.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE", help="VLAConfig overrides, e.g. num_layers=6")
    args = vars(p.parse_args(argv))
    args["model"] = dict(item.split("=", 1) for item in args["model"])
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    out = train(TokenVLATrainConfig(**args))
    print(f"saved token VLA to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
