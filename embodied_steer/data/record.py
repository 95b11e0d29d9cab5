"""Record episodes of any policy (usually a scripted expert) as a LeRobotDataset (v3 format).

The dataset is written locally (no hub): ``root/meta``, ``root/data`` (parquet) and, when the
environment renders cameras, ``root/images`` or ``root/videos``. Features:

``observation.state``              ``(D_state,)`` float32 (names from ``env.state_names``)
``observation.environment_state``  ``(D_env,)`` float32 (privileged object state)
``observation.images.<camera>``    ``(H, W, 3)`` uint8, when the env renders cameras
``action``                         ``(D_action,)`` float32, the action actually sent to the env
``task``                           the instruction
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embodied_steer.core.policy import SteerablePolicy
from embodied_steer.eval.runner import run_episode

log = logging.getLogger(__name__)


@dataclass
class RecordingSummary:
    root: Path
    episodes_saved: int
    episodes_tried: int
    frames: int


def dataset_features(env) -> dict[str, dict]:
    """LeRobot feature spec for an environment of :mod:`embodied_steer.sim`."""
    spaces = env.observation_space.spaces
    features: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": spaces["state"].shape, "names": list(env.state_names)},
        "action": {"dtype": "float32", "shape": env.action_space.shape, "names": None},
    }
    if "env_state" in spaces:
        features["observation.environment_state"] = {
            "dtype": "float32", "shape": spaces["env_state"].shape, "names": None,
        }
    for cam, space in (spaces.get("pixels").spaces.items() if "pixels" in spaces else []):
        features[f"observation.images.{cam}"] = {
            "dtype": "image", "shape": space.shape, "names": ["height", "width", "channels"],
        }
    return features


def record_episodes(
    env,
    policy: SteerablePolicy,
    root: str | Path,
    *,
    repo_id: str,
    num_episodes: int,
    seed: int = 0,
    only_successful: bool = True,
    max_attempts: int | None = None,
    overwrite: bool = False,
) -> RecordingSummary:
    """Roll out ``policy`` in ``env`` and store ``num_episodes`` episodes as a LeRobotDataset.

    Episode ``i`` of the attempts is reset with seed ``seed + i``. With ``only_successful``, failed
    attempts are discarded (up to ``max_attempts``, default ``3 * num_episodes``).

    The dataset is written to a temporary sibling folder and moved to ``root`` only when complete,
    so an interrupted recording never leaves a half-written dataset at ``root``.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"dataset folder {root} exists (pass overwrite=True to replace it)")
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    fps = int(round(env.spec_info.control_hz))
    dataset = LeRobotDataset.create(
        repo_id=repo_id, fps=fps, features=dataset_features(env), root=partial,
        robot_type=env.spec_info.extra.get("robot"), use_videos=False,
    )
    max_attempts = max_attempts or 3 * num_episodes
    saved = tried = frames = 0
    bar = tqdm(total=num_episodes, desc=f"recording {repo_id}", unit="ep")
    while saved < num_episodes and tried < max_attempts:
        buffer: list[dict] = []

        def keep(obs: dict, action: np.ndarray) -> None:
            frame = {"observation.state": obs["state"], "action": action, "task": env.instruction}
            if "env_state" in obs:
                frame["observation.environment_state"] = obs["env_state"]
            for cam, img in obs.get("pixels", {}).items():
                frame[f"observation.images.{cam}"] = img
            buffer.append(frame)

        # The policy keeps one random stream over all attempts (not re-seeded per episode).
        result = run_episode(env, policy, episode=tried, seed=seed + tried, on_step=keep, reseed_policy=False)
        tried += 1
        if only_successful and not result.success:
            continue
        for frame in buffer:
            dataset.add_frame(frame)
        dataset.save_episode()
        saved += 1
        frames += len(buffer)
        bar.update(1)
        bar.set_postfix(success_rate=f"{saved / tried:.2f}")
    bar.close()
    dataset.finalize()
    if saved < num_episodes:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"only {saved} of {num_episodes} episodes succeeded in {tried} attempts; nothing was saved")
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    log.info("recorded %d episodes (%d frames) to %s", saved, frames, root)
    return RecordingSummary(root, saved, tried, frames)
