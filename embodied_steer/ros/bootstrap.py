"""Make sure ``rclpy`` can load its shared libraries before it is imported.

The ROS 2 pip wheels keep their ``.so`` files in ``<prefix>/lib`` and ``site-packages/ros_*.libs``.
The dynamic loader only looks there when ``LD_LIBRARY_PATH`` names those folders *when the
interpreter starts*; setting ``os.environ`` later does not help. The wheels' own start-up hook
(``ros_wheels_bootstrapper.pth``) re-executes the interpreter with that path, but not under
``python -S``, nor when its guard variable was inherited from another environment, nor for another
interpreter pointed at this ``site-packages``. :func:`ensure_ros_environment` checks the path itself
and re-executes the interpreter (same arguments) with the right environment when needed.

On a robot with a system install (``/opt/ros/<distro>`` sourced: ``AMENT_PREFIX_PATH`` points into
it and ``rclpy`` is not from the wheels) nothing is changed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Mapping, MutableMapping

_GUARD = "EMBODIED_STEER_ROS_REEXEC"


def wheel_library_dirs() -> list[str]:
    """Folders that hold the ROS wheels' shared libraries (empty when rclpy is not from a wheel)."""
    spec = importlib.util.find_spec("rclpy")
    if spec is None or spec.origin is None:
        return []
    site = Path(spec.origin).resolve().parent.parent
    if not any(site.glob("ros_*.dist-info")):  # a system ROS install, not the pip wheels
        return []
    dirs = [str(Path(sys.prefix) / "lib")]
    dirs += sorted(str(p.resolve()) for p in site.glob("ros_*.libs") if p.is_dir())
    return dirs


def missing_library_dirs(env: Mapping[str, str] | None = None) -> list[str]:
    """Wheel library folders not yet on ``LD_LIBRARY_PATH`` of ``env`` (default: this process)."""
    env = os.environ if env is None else env
    have = {os.path.realpath(p) for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p}
    return [d for d in wheel_library_dirs() if os.path.realpath(d) not in have]


def ros_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` with the wheels' library folders on ``LD_LIBRARY_PATH`` and
    ``AMENT_PREFIX_PATH`` set (for ament index look-ups); use it for child processes."""
    out: MutableMapping[str, str] = dict(os.environ if env is None else env)
    missing = missing_library_dirs(out)
    if missing:
        old = [p for p in out.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        out["LD_LIBRARY_PATH"] = os.pathsep.join(missing + old)
    if wheel_library_dirs():
        prefixes = [p for p in out.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
        if sys.prefix not in prefixes:
            out["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *prefixes])
        out["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"  # the wheel hook need not re-exec again
    return dict(out)


def ensure_ros_environment() -> None:
    """Re-execute this interpreter with the ROS library path when it is missing.

    Call it first thing in a node's ``main`` (before ``import rclpy``). Returns normally when the
    environment is already right; otherwise it does not return (``os.execve``). Raises
    ``RuntimeError`` if a previous re-exec did not fix the path (to avoid a loop).
    """
    if not missing_library_dirs():
        env = ros_environment()
        os.environ.setdefault("AMENT_PREFIX_PATH", env.get("AMENT_PREFIX_PATH", ""))
        return
    if os.environ.get(_GUARD):
        raise RuntimeError(
            "ROS 2 libraries still not on LD_LIBRARY_PATH after re-executing the interpreter: "
            + ", ".join(missing_library_dirs())
        )
    env = ros_environment()
    env[_GUARD] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
