"""The generic primitive: run N rollouts of an act function on Ray workers.

For parallel data collection (e.g. DSRL's environment steps) and anything else that needs many
seeded episodes of one policy: each worker builds its environment and policy replica once (from
the picklable factories it is given), then runs the rollouts it is handed. A worker that dies has
its rollouts re-run on a fresh one. Needs an open :func:`~embodied_steer.distributed.ray_session`.

    from embodied_steer.distributed import ExecutorSettings, ray_session
    from embodied_steer.distributed.rollouts import run_rollouts

    with ray_session(ExecutorSettings(kind="ray", workers=2)):
        rollouts = run_rollouts(make_env, make_policy, seeds=range(100), act=my_act, workers=2)
    # rollouts[i].actions: (steps, D_action); .rewards: (steps,); .observations: steps + 1 dicts

``act(policy, obs) -> ActionChunk`` is any runner act function (a closure over a small network,
e.g. DSRL's noise actor, is shipped to the workers with it); it may have ``reset(seed)``.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from embodied_steer.eval.runner import ActFn, EpisodeResult, default_act

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """One episode with its transitions.

    Attributes:
        result: the runner's episode result (success, steps, reward, timings, status).
        observations: the environment's observation dicts, ``steps + 1`` of them (the last is the
            observation after the final action); empty when the episode crashed.
        actions: ``(steps, D_action)`` executed actions, environment units.
        rewards: ``(steps,)``.
        terminated, truncated: ``(steps,)`` flags as returned by ``env.step``.
        act_info: what the act function put in each chunk's ``info`` (one entry per chunk).
    """

    result: EpisodeResult
    observations: list[dict[str, Any]] = field(default_factory=list)
    actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    terminated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    act_info: list[dict[str, Any]] = field(default_factory=list)


class _Recorder:
    """Wraps an env to keep what passes through ``reset`` and ``step``."""

    def __init__(self, env) -> None:
        self.env = env
        self.observations: list[dict[str, Any]] = []
        self.actions, self.rewards, self.terminated, self.truncated = [], [], [], []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.observations = [obs]
        self.actions, self.rewards, self.terminated, self.truncated = [], [], [], []
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.observations.append(obs)
        self.actions.append(np.asarray(action, np.float32))
        self.rewards.append(float(reward))
        self.terminated.append(bool(terminated))
        self.truncated.append(bool(truncated))
        return obs, reward, terminated, truncated, info


class RolloutWorker:
    """Ray actor body: one environment and one policy replica, built once from the factories."""

    def __init__(self, make_env: Callable[[], Any], make_policy: Callable[[Any], Any], torch_threads: int = 1) -> None:
        import torch

        torch.set_num_threads(int(torch_threads))
        self.env = _Recorder(make_env())
        self.policy = make_policy(self.env.env)

    def rollout(self, index: int, seed: int, act: ActFn, max_steps: int | None,
                execute_steps: int | None) -> Rollout:
        from embodied_steer.eval.runner import run_episode_safely

        infos: list[dict[str, Any]] = []

        def recording_act(policy, obs):
            chunk = act(policy, obs)
            infos.append(dict(chunk.info))
            return chunk

        if hasattr(act, "reset"):
            recording_act.reset = act.reset  # type: ignore[attr-defined]
        result = run_episode_safely(self.env, self.policy, episode=index, seed=seed, act=recording_act,
                                    max_steps=max_steps, execute_steps=execute_steps)
        rec = self.env
        if result.status != "ok":
            return Rollout(result=result)
        return Rollout(result=result, observations=rec.observations, actions=np.stack(rec.actions),
                       rewards=np.asarray(rec.rewards, np.float32), terminated=np.asarray(rec.terminated),
                       truncated=np.asarray(rec.truncated), act_info=infos)

    def pid(self) -> int:
        import os

        return os.getpid()


def run_rollouts(make_env: Callable[[], Any], make_policy: Callable[[Any], Any], seeds: Sequence[int], *,
                 act: ActFn = default_act, workers: int = 2, torch_threads: int = 1, max_steps: int | None = None,
                 execute_steps: int | None = None, max_attempts: int = 3) -> list[Rollout]:
    """Run one rollout per seed on ``workers`` Ray actors; results in the order of ``seeds``.

    Args:
        make_env: builds the environment on a worker (picklable: a function, a ``functools.partial``).
        make_policy: ``env -> SteerablePolicy``, called on the worker after ``make_env``.
        seeds: one episode per seed (episode ``i`` is reset with ``seeds[i]``).
        act: the act function; its chunk ``info`` is kept per chunk in ``Rollout.act_info``.
        max_attempts: dispatches of a rollout whose worker dies before giving up with an error.
    """
    import ray
    from ray.exceptions import RayActorError

    from embodied_steer.distributed.pool import DistributedError

    if not ray.is_initialized():
        raise DistributedError("Ray is not initialised: use embodied_steer.distributed.ray_session(...)")
    actor_cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(RolloutWorker)
    env_ref, policy_ref, act_ref = ray.put(make_env), ray.put(make_policy), ray.put(act)

    def new_actor():
        return actor_cls.remote(env_ref, policy_ref, torch_threads)

    actors = [new_actor() for _ in range(max(1, int(workers)))]
    todo = collections.deque((i, int(s), 0) for i, s in enumerate(seeds))
    out: dict[int, Rollout] = {}
    inflight: dict[Any, tuple[int, Any, tuple[int, int, int]]] = {}
    busy = [False] * len(actors)
    try:
        while todo or inflight:
            for slot, actor in enumerate(actors):
                if not busy[slot] and todo:
                    task = todo.popleft()
                    ref = actor.rollout.remote(task[0], task[1], act_ref, max_steps, execute_steps)
                    inflight[ref] = (slot, actor, task)
                    busy[slot] = True
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                slot, actor, (index, seed, attempt) = inflight.pop(ref)
                try:
                    out[index] = ray.get(ref)
                except RayActorError:
                    if attempt + 1 >= max_attempts:
                        raise DistributedError(f"rollout {index} (seed {seed}): its worker died {attempt + 1} times")
                    log.warning("rollout worker %d died; retrying rollout %d on a new one", slot, index)
                    ray.kill(actor, no_restart=True)
                    actors[slot] = new_actor()
                    todo.appendleft((index, seed, attempt + 1))
                busy[slot] = False
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
    return [out[i] for i in range(len(out))]
