"""Start ROS nodes as supervised processes (tests, benchmarks): one session per process, a reader
thread that keeps every output line, ``wait_for`` a line, and a tear-down that leaves nothing behind
(SIGINT to the process group, wait, SIGKILL, then check that no process of the group is left)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """Path of a console script installed next to this interpreter (e.g. ``embodied-steer-sim-arm``)."""
    return str(BIN / name)


_COUNTER = iter(range(10_000))


def next_domain_id() -> int:
    """A ``ROS_DOMAIN_ID`` unique per pytest-xdist worker and call: 10 + 20 * worker + counter."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").lstrip("gw") or "0"
    return 10 + 20 * (int(worker) % 4) + next(_COUNTER) % 20


def shm_entries() -> set[str]:
    """Fast DDS shared-memory files in ``/dev/shm`` (there must be none new after a UDP-only run)."""
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith(("fastdds", "fastrtps", "fast_datasharing"))}
    except FileNotFoundError:
        return set()


class NodeProcess:
    """A child process in its own session whose output lines are collected."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None) -> None:
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.pgid = self.proc.pid  # session leader: its pid is the group id
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        """Block until a line starting with ``prefix`` appears; ``TimeoutError`` / ``RuntimeError``
        (process ended) otherwise, with the output's tail."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before '{prefix}':\n"
                                       + self.tail())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: no '{prefix}' line within {timeout} s:\n" + self.tail())
                self._cond.wait(min(left, 0.5))

    def find(self, prefix: str) -> list[str]:
        with self._cond:
            return [line for line in self.lines if line.startswith(prefix)]

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def group_alive(self) -> bool:
        """Whether any process of this process's group still exists."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT the group, wait, then SIGKILL; reap; return the exit code."""
        if self.alive():
            self.signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.group_alive():
            self.signal(signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 10
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._reader.join(timeout=5)
        return self.proc.returncode
