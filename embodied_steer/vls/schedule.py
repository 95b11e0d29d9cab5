"""Guidance strength that follows reward progress, and stage switching for multi-stage tasks.

Per chunk, the guided sampler evaluates the current stage's reward at the end effector's *actual*
position (a one-point trajectory) and hands it to a :class:`StageTracker`:

* stage switching: when the reward has reached the stage's threshold for ``dwell`` consecutive
  chunks, the tracker moves on to the next stage (never back); the last stage is kept to the end
  of the episode;
* progress: ``p = (r - r_start) / (threshold - r_start)`` clipped to [0, 1], where ``r_start`` is
  the reward when the stage began;
* strength: :class:`GuidanceSchedule` turns progress into a factor on λ, e.g. the sigmoid
  ``1 - σ(steepness · (p - midpoint))``: full guidance far from the goal, fading as the policy gets
  there so that it finishes the stage (grasping, say) on its own.

The tracker's state belongs to one episode; :meth:`StageTracker.reset` starts a new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

from embodied_steer.core.errors import ConfigError


@dataclass(frozen=True)
class GuidanceSchedule:
    """Factor on the guidance scale as a function of stage progress ``p`` in [0, 1].

    Attributes:
        kind: ``"constant"`` (always 1) or ``"sigmoid"`` (``1 - σ(steepness·(p - midpoint))``).
        midpoint: progress at which the sigmoid factor is one half.
        steepness: how sharply it falls around ``midpoint``.
        floor: smallest factor (keeps a little guidance near the goal).
    """

    kind: Literal["constant", "sigmoid"] = "constant"
    midpoint: float = 0.7
    steepness: float = 10.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "sigmoid"):
            raise ConfigError(f"schedule kind must be 'constant' or 'sigmoid', got '{self.kind}'")
        if self.steepness <= 0:
            raise ConfigError(f"schedule steepness must be > 0, got {self.steepness}")
        if not 0.0 <= self.floor <= 1.0:
            raise ConfigError(f"schedule floor must be in [0, 1], got {self.floor}")

    def factor(self, progress: float) -> float:
        if self.kind == "constant":
            return 1.0
        p = min(max(float(progress), 0.0), 1.0)
        value = 1.0 - 1.0 / (1.0 + math.exp(-self.steepness * (p - self.midpoint)))
        return self.floor + (1.0 - self.floor) * value


@dataclass
class StageTracker:
    """Which stage of a multi-stage reward program is active in the current episode.

    Args:
        num_stages: stages of the program (``stage_1`` … ``stage_n``; tracked here as 0 … n-1).
        thresholds: per stage, the reward at which the stage counts as done (one value applies to
            every stage; entries beyond the program's stages are ignored). Reaching it moves to the next stage; for the last stage it only defines
            progress.
    """

    num_stages: int
    thresholds: Sequence[float]
    dwell: int = 1
    """Consecutive chunks the threshold must be met before the stage switches (lets the policy
    finish what it does at the goal, e.g. close the gripper, before the next stage pulls away)."""
    stage: int = 0
    start_reward: float | None = None
    last_reward: float | None = None
    switches: list[tuple[int, int]] = field(default_factory=list)
    """(chunk index, new stage) of every switch this episode."""
    _chunk: int = 0
    _met: int = 0

    def __post_init__(self) -> None:
        if self.dwell < 1:
            raise ConfigError(f"stage dwell must be >= 1 chunk, got {self.dwell}")
        if self.num_stages < 1:
            raise ConfigError(f"a reward program needs at least one stage, got {self.num_stages}")
        values = [float(t) for t in self.thresholds]
        if len(values) == 1:
            values = values * self.num_stages
        values = values[: self.num_stages]  # one list can serve programs with fewer stages
        if len(values) != self.num_stages:
            raise ConfigError(f"{len(values)} stage thresholds for a program with {self.num_stages} stages")
        self.thresholds = values

    def reset(self) -> None:
        """Start a new episode at stage 0."""
        self.stage = 0
        self.start_reward = None
        self.last_reward = None
        self.switches = []
        self._chunk = 0
        self._met = 0

    def update(self, reward_at: Callable[[int], float]) -> float:
        """Advance through every stage whose threshold the current state meets; return progress.

        Args:
            reward_at: ``stage -> reward`` of the current state (the end effector where it is now).
        """
        reward = float(reward_at(self.stage))
        if self.start_reward is None:
            self.start_reward = reward
        while reward >= self.thresholds[self.stage] and self.stage < self.num_stages - 1:
            self._met += 1
            if self._met < self.dwell:
                break
            self._met = 0
            self.stage += 1
            self.switches.append((self._chunk, self.stage))
            reward = float(reward_at(self.stage))
            self.start_reward = reward
        else:
            self._met = 0
        self.last_reward = reward
        self._chunk += 1
        return self.progress(reward)

    def progress(self, reward: float) -> float:
        """``(reward - start) / (threshold - start)`` clipped to [0, 1]; 1 when the threshold is met."""
        goal = self.thresholds[self.stage]
        start = self.start_reward if self.start_reward is not None else reward
        if reward >= goal:
            return 1.0
        span = goal - start
        if span <= 0:
            return 0.0
        return min(max((reward - start) / span, 0.0), 1.0)
