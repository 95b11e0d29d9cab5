"""Where the Ray workers come from: an embedded local Ray on loopback, or a user's cluster.

``executor`` config block (``conf/eval.yaml``, ``conf/sweep.yaml``)::

    executor:
      kind: ray          # ray | inprocess
      address: null      # null: start Ray inside this process, on 127.0.0.1 only; else ray.init(address=...)
      workers: 2         # episode workers (actors), one policy replica and one environment each
      torch_threads: 1   # torch.set_num_threads in every worker
      max_attempts: 3    # tries per episode when its worker dies (a crash *inside* an episode is a result)
      runtime_env: null  # passed to ray.init for a cluster (e.g. {working_dir: ., env_vars: {...}})
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, fields
from typing import Any, Iterator, Mapping

from embodied_steer.core.errors import ConfigError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
KINDS = ("inprocess", "ray")
# Environment every worker needs; a local Ray inherits the driver's environment, a cluster gets
# these through the runtime env.
WORKER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MUJOCO_GL", "EMBODIED_STEER_CATALOG")


@dataclass(frozen=True)
class ExecutorSettings:
    """The ``executor`` config block, checked."""

    kind: str = "inprocess"
    address: str | None = None
    workers: int = 2
    torch_threads: int = 1
    max_attempts: int = 3
    runtime_env: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> "ExecutorSettings":
        block = dict(block or {})
        known = {f.name for f in fields(cls)}
        unknown = set(block) - known
        if unknown:
            raise ConfigError(f"unknown executor settings {sorted(unknown)}; known: {sorted(known)}")
        settings = cls(**block)
        if settings.kind not in KINDS:
            raise ConfigError(f"executor.kind must be one of {list(KINDS)}, got {settings.kind!r}")
        for name in ("workers", "torch_threads", "max_attempts"):
            if int(getattr(settings, name)) < 1:
                raise ConfigError(f"executor.{name} must be >= 1, got {getattr(settings, name)}")
        return settings


@contextlib.contextmanager
def ray_session(settings: ExecutorSettings, *, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of the block; shut it down afterwards if it was started here.

    With ``address=None``, Ray starts inside this process with every service bound to 127.0.0.1,
    no dashboard and usage statistics off (``RAY_USAGE_STATS_ENABLED=0``). An already initialised
    Ray (e.g. a test's shared instance) is used as it is and left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # CPU workers: leave device variables alone
    if settings.address is None:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        ray.init(
            num_cpus=num_cpus or settings.workers,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            object_store_memory=200 * 1024**2,
            configure_logging=False,
            log_to_driver=False,
        )
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        runtime_env = dict(settings.runtime_env or {})
        env_vars = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
        runtime_env["env_vars"] = {**env_vars, **runtime_env.get("env_vars", {})}
        log.info("connecting to the Ray cluster at %s", settings.address)
        ray.init(address=settings.address, runtime_env=runtime_env, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()
