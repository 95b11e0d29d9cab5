"""A training-only episode limit, shorter than the environment's own horizon.

Sparse-reward manipulation episodes that succeed do so early (the shipped Lift policy's successes
take 40–70 of the 200 allowed steps) while failures run the full horizon: most of an RL budget is
spent in the tail of failed episodes, where nothing is learned. Cutting *training* episodes at
``horizon`` environment steps spends that budget on more attempts; evaluation keeps the
environment's horizon, so reported success rates are unchanged in meaning.

The cut is either

* ``"truncate"`` — a time limit: the last transition is bootstrapped (``truncated=True``), the
  episode's Monte-Carlo return stays unknown; or
* ``"fail"`` — the episode counts as failed from the cut on (``terminated=True``, no value after
  it). Training then optimises success *within* ``horizon`` steps, a stricter goal than the
  evaluation's, and every training episode has a known return (the critic's Monte-Carlo floor
  then covers the failures too, and their values are pulled towards 0 instead of being
  bootstrapped from optimistic estimates).
"""

from __future__ import annotations

from dataclasses import dataclass

from embodied_steer.core.errors import ConfigError

HORIZON_CUTS = ("truncate", "fail")


@dataclass(frozen=True)
class TrainingHorizon:
    """Cut episodes at ``steps`` environment steps (``None``: never), as a ``cut``."""

    steps: int | None = None
    cut: str = "truncate"

    def __post_init__(self) -> None:
        if self.cut not in HORIZON_CUTS:
            raise ConfigError(f"train_horizon_cut must be one of {HORIZON_CUTS}, got {self.cut!r}")
        if self.steps is not None and int(self.steps) < 1:
            raise ConfigError(f"train_horizon must be >= 1 environment steps (or null), got {self.steps}")

    def apply(self, episode_steps: int, terminated: bool, truncated: bool) -> tuple[bool, bool, bool]:
        """``(terminated, truncated, cut)`` after ``episode_steps`` steps of the current episode.

        ``cut`` is true when this limit (not the environment) ended the episode.
        """
        if self.steps is None or terminated or truncated or episode_steps < self.steps:
            return terminated, truncated, False
        return (True, False, True) if self.cut == "fail" else (False, True, True)
