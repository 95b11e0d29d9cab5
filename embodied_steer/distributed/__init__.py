"""Distributed evaluation on Ray: episodes as actor tasks, results streamed into the results folders.

* :func:`ray_session` — an embedded local Ray on 127.0.0.1 or ``ray.init(address=...)``.
* :class:`WorkerPool` — actors with one environment and one policy replica each; runs the
  episodes of :class:`~embodied_steer.eval.cells.EvalCell` s with retries and exactly-once results.
* :func:`run_rollouts` — the generic primitive: N rollouts of an act function on Ray workers
  (what parallel data collection, e.g. for DSRL, builds on).
"""

from embodied_steer.distributed.cluster import ExecutorSettings, ray_session
from embodied_steer.distributed.pool import DistributedError, RunReport, WorkerPool
from embodied_steer.distributed.rollouts import Rollout, run_rollouts

__all__ = ["DistributedError", "ExecutorSettings", "Rollout", "RunReport", "WorkerPool", "ray_session", "run_rollouts"]
