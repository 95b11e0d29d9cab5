"""Run the episodes of many evaluation cells on a pool of Ray actors and stream results to disk.

The driver (this process) is the only writer of the results folders. Each finished episode is
appended to its cell's ``episodes.jsonl`` as it arrives, so an interrupted run resumes from what is
on disk. Exactly-once accounting:

* an episode is dispatched only if its id is not in the folder yet (resume skips finished ones);
* a result whose id is already recorded is dropped (counted in ``duplicates_dropped``);
* a worker that dies (process killed, node lost) fails its in-flight episodes with a Ray actor
  error: they are queued again, a fresh actor takes the dead one's place, and after
  ``max_attempts`` deaths an episode is recorded as crashed instead of retried forever;
* an exception inside an episode is a result (``status="crashed"``), as in the in-process
  evaluator; a cell that cannot be built (bad config) stops the run with that error.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from embodied_steer.core.errors import SteerError
from embodied_steer.eval.cells import EvalCell, load_meta, save_meta
from embodied_steer.eval.runner import EpisodeResult, EvalSummary, ResultSink, finish_results, prepare_results

log = logging.getLogger(__name__)

OnResult = Callable[[EvalCell, EpisodeResult], None]


class DistributedError(SteerError, RuntimeError):
    """A distributed run cannot go on (a cell that cannot be built on a worker, no Ray)."""


@dataclass
class RunReport:
    """What :meth:`WorkerPool.run` did.

    Attributes:
        summaries: cell name → its summary (every cell of the run).
        executed: episodes run and recorded by this run (not counting those resumed from disk).
        resumed: episodes found finished on disk and skipped.
        retried: episode dispatches repeated because their worker died.
        worker_deaths: actors found dead and replaced.
        duplicates_dropped: results that arrived for an episode already recorded.
        seconds: wall time of the run.
    """

    summaries: dict[str, EvalSummary] = field(default_factory=dict)
    executed: int = 0
    resumed: int = 0
    retried: int = 0
    worker_deaths: int = 0
    duplicates_dropped: int = 0
    seconds: float = 0.0


@dataclass
class _Task:
    cell: str
    episode: int
    seed: int
    attempt: int = 0


class WorkerPool:
    """``workers`` Ray actors (:class:`~embodied_steer.distributed.worker.EpisodeWorker`), reusable across runs.

    Needs an initialised Ray (see :func:`~embodied_steer.distributed.cluster.ray_session`). Each
    actor reserves one CPU and holds one environment and one policy replica.

    Args:
        workers: number of actors.
        torch_threads: torch threads per actor.
        max_attempts: dispatches of one episode before a dying worker makes it a crashed result.
        inflight_per_worker: episodes queued on an actor at once (2 keeps it busy while the
            driver writes the previous result).
    """

    def __init__(self, workers: int, *, torch_threads: int = 1, max_attempts: int = 3,
                 inflight_per_worker: int = 2) -> None:
        import ray

        if not ray.is_initialized():
            raise DistributedError("Ray is not initialised: use embodied_steer.distributed.ray_session(...)")
        from embodied_steer.distributed.worker import EpisodeWorker

        free = ray.available_resources().get("CPU", 0)
        if free < workers:
            log.warning("Ray has %s free CPUs for %d workers: the others wait until CPUs free up", free, workers)
        self._actor_cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(EpisodeWorker)
        self.torch_threads, self.max_attempts = int(torch_threads), int(max_attempts)
        self.inflight_per_worker = max(1, int(inflight_per_worker))
        self.actors = [self._new_actor() for _ in range(int(workers))]

    def _new_actor(self):
        return self._actor_cls.remote(self.torch_threads)

    def describe(self) -> list[dict[str, Any]]:
        """One dict per actor: ``pid``, ``host``, ``module`` (the embodied_steer it imported), ``torch_threads``."""
        import ray

        return ray.get([a.describe.remote() for a in self.actors])

    def warm_up(self, cell: EvalCell) -> None:
        """Have every actor build ``cell`` now (env, policy replica), so a timed run measures episodes only."""
        import ray

        ray.get([a.cell_meta.remote(cell.name, cell.cfg) for a in self.actors])

    def shutdown(self) -> None:
        """Kill the actors (their processes exit; Ray itself keeps running)."""
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------------------------ running
    def run(self, cells: Sequence[EvalCell], *, resume: bool = False, on_result: OnResult | None = None,
            progress: bool = True) -> RunReport:
        """Run every episode of ``cells`` not yet on disk; return summaries and counts.

        ``on_result(cell, result)`` is called after each result is safely written (a test uses it
        to kill a worker mid-run; raising from it interrupts the run, leaving a resumable folder).
        """
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        names = [c.name for c in cells]
        if len(set(names)) != len(names):
            raise DistributedError(f"cell names must be unique, got {names}")
        report = RunReport()
        start = time.perf_counter()
        by_name = {c.name: c for c in cells}
        done: dict[str, dict[int, EpisodeResult]] = {}
        pending: dict[str, collections.deque[_Task]] = {}
        meta: dict[str, dict[str, Any] | None] = {}
        for cell in cells:
            cell.write_config(resume=resume)
            found = prepare_results(cell.output_dir, resume=resume)
            done[cell.name] = {i: r for i, r in found.items() if i < cell.episodes}
            report.resumed += len(done[cell.name])
            pending[cell.name] = collections.deque(
                _Task(cell.name, i, cell.seed + i) for i in range(cell.episodes) if i not in done[cell.name])
            meta[cell.name] = load_meta(cell.output_dir) if resume else None
        cfg_refs = {c.name: ray.put(c.cfg) for c in cells if pending[c.name]}
        sinks: dict[str, ResultSink] = {}
        inflight: dict[Any, tuple[int, Any, _Task]] = {}
        load = [0] * len(self.actors)
        current: list[str | None] = [None] * len(self.actors)
        total = sum(c.episodes for c in cells)
        bar = tqdm(total=total, initial=report.resumed, desc="episodes", unit="ep", mininterval=2,
                   disable=not progress)

        def next_task(slot: int) -> _Task | None:
            # stay on the cell this actor has built; otherwise take the cell with the most work left
            if current[slot] is not None and pending.get(current[slot]):
                return pending[current[slot]].popleft()
            waiting = [n for n in names if pending[n]]
            if not waiting:
                return None
            name = max(waiting, key=lambda n: len(pending[n]))
            current[slot] = name
            return pending[name].popleft()

        def finish_cell(name: str) -> None:
            cell = by_name[name]
            m = meta[name]
            if m is None:  # finished on disk by a run that left no meta.json: ask a worker
                try:
                    m = meta[name] = ray.get(self.actors[0].cell_meta.remote(name, cell.cfg))
                except RayTaskError as exc:
                    raise DistributedError(f"cell {name} failed on a worker: {exc.cause!r}") from None
                save_meta(cell.output_dir, m)
            report.summaries[name] = finish_results(cell.output_dir, list(done[name].values()), env=m["env"],
                                                    policy=m["policy"], render_settings=m["render_settings"],
                                                    extra=m["extra"])
            if name in sinks:
                sinks.pop(name).close()

        def record(task: _Task, result: EpisodeResult) -> None:
            if task.episode in done[task.cell]:
                report.duplicates_dropped += 1
                return
            cell = by_name[task.cell]
            if task.cell not in sinks:
                sinks[task.cell] = ResultSink(cell.output_dir / "episodes.jsonl")
            sinks[task.cell].append(result)
            done[task.cell][task.episode] = result
            report.executed += 1
            bar.update(1)
            if on_result is not None:
                on_result(cell, result)

        def cell_open(name: str) -> bool:
            return bool(pending[name]) or any(t.cell == name for _, _, t in inflight.values())

        aborted = True
        try:
            for name in names:
                if not pending[name]:
                    finish_cell(name)
            while any(pending[n] for n in names) or inflight:
                for slot in range(len(self.actors)):
                    while load[slot] < self.inflight_per_worker:
                        task = next_task(slot)
                        if task is None:
                            break
                        actor = self.actors[slot]
                        ref = actor.run.remote(task.cell, cfg_refs[task.cell], task.episode, task.seed)
                        inflight[ref] = (slot, actor, task)
                        load[slot] += 1
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    slot, actor, task = inflight.pop(ref)
                    if self.actors[slot] is actor:
                        load[slot] -= 1
                    try:
                        row, cell_meta = ray.get(ref)
                    except RayActorError as exc:
                        self._on_worker_death(slot, actor, task, exc, pending, load, current, report, record)
                        continue
                    except RayTaskError as exc:
                        raise DistributedError(f"cell {task.cell} failed on a worker: {exc.cause!r}") from None
                    if meta[task.cell] is None:
                        meta[task.cell] = cell_meta
                        save_meta(by_name[task.cell].output_dir, cell_meta)
                    record(task, EpisodeResult(**row))
                for name in names:
                    if name not in report.summaries and not cell_open(name):
                        finish_cell(name)
            aborted = False
        finally:
            bar.close()
            for sink in sinks.values():
                sink.close()
            if aborted:  # drop the queued work (a running episode finishes; its result is not written)
                for ref in inflight:
                    try:
                        ray.cancel(ref)
                    except Exception as exc:  # already finished or its actor is gone
                        log.debug("cancel: %s", exc)
        report.seconds = time.perf_counter() - start
        return report

    def _on_worker_death(self, slot, actor, task, exc, pending, load, current, report, record) -> None:
        import ray

        if "creation task" in str(exc):  # the worker cannot even start there: retrying would not help
            raise DistributedError(f"a Ray worker could not start: {exc}") from None

        if self.actors[slot] is actor:  # first news of this death: replace the actor in its slot
            report.worker_deaths += 1
            log.warning("worker %d died (%s); starting a new one", slot, type(exc).__name__)
            ray.kill(actor, no_restart=True)
            self.actors[slot] = self._new_actor()
            load[slot] = 0
            current[slot] = None
        task.attempt += 1
        if task.attempt < self.max_attempts:
            report.retried += 1
            pending[task.cell].appendleft(task)
            return
        log.error("episode %d of %s: its worker died %d times; recorded as crashed", task.episode, task.cell,
                  task.attempt)
        record(task, EpisodeResult(episode=task.episode, seed=task.seed, success=False, steps=0, reward=0.0,
                                   seconds=0.0, inference_seconds=0.0, status="crashed",
                                   error=f"WorkerDied: worker died {task.attempt} times running this episode"))
