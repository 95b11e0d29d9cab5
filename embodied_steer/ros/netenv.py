"""Loopback-only ROS 2 environments for tests, benchmarks and local runs (no ROS import).

Kilted ignores ``ROS_LOCALHOST_ONLY``; by default Fast DDS discovery multicasts off the machine.
:func:`loopback_env` returns an environment whose DDS traffic stays on 127.0.0.1: a Fast DDS XML
profile with one UDPv4 transport restricted to interface ``lo``, initial peer 127.0.0.1 and the
built-in transports (including shared memory) disabled, so a killed process leaves no
``/dev/shm`` files. ``ROS_AUTOMATIC_DISCOVERY_RANGE`` is removed, because it would override the
profile (use one or the other, never both).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

FASTDDS_LOOPBACK_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>loopback_udp</transport_id>
        <type>UDPv4</type>
        <interfaceWhiteList>
          <interface>lo</interface>
        </interfaceWhiteList>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="embodied_steer_loopback" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>loopback_udp</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
        <builtin>
          <initialPeersList>
            <locator>
              <udpv4>
                <address>127.0.0.1</address>
              </udpv4>
            </locator>
          </initialPeersList>
        </builtin>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def write_loopback_profile(folder: str | os.PathLike) -> Path:
    """Write the loopback Fast DDS profile into ``folder``; return its path."""
    path = Path(folder) / "fastdds_loopback.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FASTDDS_LOOPBACK_PROFILE)
    return path


def loopback_env(folder: str | os.PathLike, domain_id: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a ROS process confined to loopback, its own domain and ``folder``.

    Args:
        folder: temporary folder for the profile, ``ROS_HOME`` and ``ROS_LOG_DIR``.
        domain_id: ``ROS_DOMAIN_ID`` (0–101 are safe with Fast DDS's default ports).
        base: environment to start from (default: this process's).
    """
    if not 0 <= int(domain_id) <= 101:
        raise ValueError(f"ROS_DOMAIN_ID must be in [0, 101], got {domain_id}")
    env = dict(os.environ if base is None else base)
    env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    env.pop("ROS_STATIC_PEERS", None)
    env.pop("ROS_LOCALHOST_ONLY", None)
    folder = Path(folder)
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(write_loopback_profile(folder))
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["ROS_HOME"] = str(folder / "ros_home")
    env["ROS_LOG_DIR"] = str(folder / "ros_log")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MUJOCO_GL", "egl")
    return env
