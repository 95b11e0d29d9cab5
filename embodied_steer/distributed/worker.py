"""The Ray actor that runs episodes: one environment and one policy replica per worker process."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from typing import Any


class EpisodeWorker:
    """Runs episodes of one cell at a time (wrapped with ``ray.remote`` by the pool).

    The environment and policy are built on the worker at the first episode of a cell and kept
    for the cell's next episodes; switching to another cell closes them first.
    """

    def __init__(self, torch_threads: int = 1) -> None:
        import torch

        torch.set_num_threads(int(torch_threads))
        os.environ.setdefault("MUJOCO_GL", "egl")
        self._cell: str | None = None
        self._runtime = None

    def describe(self) -> dict[str, Any]:
        """Process id, host and the ``embodied_steer`` this worker imported (to check the set-up)."""
        import embodied_steer
        import torch

        return {"pid": os.getpid(), "host": socket.gethostname(), "module": embodied_steer.__file__,
                "torch_threads": torch.get_num_threads()}

    def _enter(self, cell: str, cfg: dict[str, Any]):
        from embodied_steer.eval.cells import build_runtime

        if cell != self._cell:
            self.close()
            self._runtime = build_runtime(cfg)
            self._cell = cell
        return self._runtime

    def cell_meta(self, cell: str, cfg: dict[str, Any]) -> dict[str, Any]:
        """Build (or reuse) the cell and return its meta (env/policy names, render settings, extra)."""
        return self._enter(cell, cfg).meta

    def run(self, cell: str, cfg: dict[str, Any], episode: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run episode ``episode`` (reset with ``seed``) of ``cell``; return (result row, cell meta).

        A failure to *build* the cell (bad config, missing checkpoint) raises; an exception inside
        the episode is returned as a ``status="crashed"`` result, as in the in-process evaluator.
        """
        from embodied_steer.eval.runner import run_episode_safely

        rt = self._enter(cell, cfg)
        result = run_episode_safely(rt.env, rt.policy, episode=episode, seed=seed, max_steps=cfg.get("max_steps"),
                                    execute_steps=cfg.get("execute_steps"), act=rt.act)
        return asdict(result), rt.meta

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
        self._runtime, self._cell = None, None
