"""Assistance monitor node: publishes REALM's per-step entropy estimate and recommended assistance.

It runs its own replica of the configured policy (the ``SAMPLES`` intervention point) beside the
policy server, so estimating never delays the control loop. It listens to the same observation
topics (:mod:`embodied_steer.ros.inputs`), feeds every new synchronised observation into the
policy's history (``observe_rate_hz``), and ``query_rate_hz`` times per second draws ``samples``
action chunks from that history and runs :class:`~embodied_steer.realm.monitor.AssistanceMonitor`.

Published (names relative, so they follow namespace and remappings):

=========================  =================================  =============================================
topic                      type                               content
=========================  =================================  =============================================
``assist/entropy``         ``std_msgs/Float32``               mean per-step forecast entropy (nats / step)
``assist/recommendation``  ``std_msgs/String``                JSON: ``recommended`` (none / discrete /
                                                              correction / teleop, after hysteresis),
                                                              ``best`` (now), ``entropy``, ``expected``
                                                              (mode → nats / step), ``value``, ``options``
                                                              (k × D first actions), ``option_probs``,
                                                              ``direction`` (D), ``stamp_ns``, ``status``
``diagnostics``            ``diagnostic_msgs/DiagnosticArray`` OK when no help is recommended, WARN with the
                                                              recommended mode, ERROR for invalid samples;
                                                              STALE when observations stopped
=========================  =================================  =============================================

A UI shows ``assist/recommendation``; ``episode_reset`` restarts the hysteresis and the history. With
``log_path`` every query is also appended to a JSON-lines file (the format of ``embodied-steer eval
assist.enabled=true``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_msgs.msg import Float32, String

from embodied_steer.core.policy import InterventionPoint
from embodied_steer.realm.modes import AssistConfig
from embodied_steer.realm.monitor import AssistanceMonitor, MonitorRecord
from embodied_steer.ros import conversions as cv
from embodied_steer.ros.inputs import ObservationInputs
from embodied_steer.ros.node_utils import announce, declare, run_node
from embodied_steer.ros.params import ASSIST_MONITOR as DEFAULTS


def _strings(values: list[str]) -> list[str]:
    return [v for v in values if v]


class AssistMonitorNode(Node):
    """See the module docstring. Parameters: :data:`~embodied_steer.ros.params.ASSIST_MONITOR`."""

    def __init__(self, node_name: str = "assist_monitor", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare(self, DEFAULTS)
        self._check_parameters()
        self.policy = self._load_policy()
        config = AssistConfig(estimator=self.p["estimator"], human_std=float(self.p["human_std"]),
                              k_max=int(self.p["k_max"]), correction_dims=int(self.p["correction_dims"]))
        self.monitor = AssistanceMonitor(self.policy, config, samples=int(self.p["samples"]),
                                         margin=float(self.p["margin"]), patience=int(self.p["patience"]),
                                         log_path=self.p["log_path"] or None)
        self.monitor.reset()
        cams = _strings(self.p["cameras"])
        self.assembler = cv.ObservationAssembler(self.p["gripper_joints"], self.policy.info.env_state_dim, cams,
                                                 int(self.p["sync_slop_s"] * 1e9), self.p["instruction"])
        self._last_obs_wall = None
        self.inputs = ObservationInputs(self, self.assembler, max_future_stamp_s=self.p["max_future_stamp_s"],
                                        on_observation=self._mark_fresh, on_reset=self._on_reset)
        self.inputs.subscribe(cams)
        self.pub_entropy = self.create_publisher(Float32, "assist/entropy", 10)
        self.pub_rec = self.create_publisher(String, "assist/recommendation", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "diagnostics", 10)
        self.counters = {"observed": 0, "queries": 0, "invalid": 0, "stale": 0}
        self._observed_stamp = -1
        self._queried_stamp = -1
        self.last: MonitorRecord | None = None
        self.create_timer(1.0 / float(self.p["observe_rate_hz"]), self._observe)
        self.create_timer(1.0 / float(self.p["query_rate_hz"]), self._query)
        announce(f"READY {self.get_name()} monitoring '{self.policy.info.name}' with {self.p['samples']} samples")

    # ------------------------------------------------------------------ set-up
    def _check_parameters(self) -> None:
        p = self.p
        for name in ("observe_rate_hz", "query_rate_hz", "human_std", "obs_timeout_s"):
            if not float(p[name]) > 0:
                raise ValueError(f"assist_monitor: parameter {name} must be > 0, got {p[name]}")
        if int(p["samples"]) < 2:
            raise ValueError(f"assist_monitor: parameter samples must be >= 2, got {p['samples']}")
        if p["estimator"] not in ("spacing", "knn", "gaussian"):
            raise ValueError(f"assist_monitor: estimator must be spacing, knn or gaussian, got {p['estimator']!r}")

    def _load_policy(self):
        from embodied_steer.cli import compose, instantiate_policy

        overrides = [f"policy={self.p['policy']}"] + _strings(self.p["policy_overrides"])
        if self.p["checkpoint"]:
            overrides.append(f"policy.path_or_hub_id={self.p['checkpoint']}")
        torch.set_num_threads(1)
        policy = instantiate_policy(compose("eval", overrides).policy)
        policy.require(InterventionPoint.SAMPLES, "the assistance monitor")
        policy.reset(seed=int(self.p["seed"]))
        return policy

    # ------------------------------------------------------------------ inputs
    def _mark_fresh(self) -> None:
        self._last_obs_wall = time.monotonic()

    def _on_reset(self, _stamp: int) -> None:
        self.policy.reset(seed=int(self.p["seed"]))
        self.monitor.reset()
        self._observed_stamp = self._queried_stamp = -1

    def _observe(self) -> None:
        """Feed a new synchronised observation into the policy's history (no sampling)."""
        stamp = self.assembler.latest_stamp()
        if stamp is None or stamp <= self._observed_stamp:
            return
        obs = self.assembler.build(timestamp=stamp / 1e9)
        if obs is None:
            return
        self.policy.observe(obs)
        self._observed_stamp = stamp
        self.counters["observed"] += 1

    # ------------------------------------------------------------------ estimates
    def _query(self) -> None:
        if self._observed_stamp < 0:
            return
        if self._last_obs_wall is None or time.monotonic() - self._last_obs_wall > self.p["obs_timeout_s"]:
            self.counters["stale"] += 1
            self._diagnose(DiagnosticStatus.STALE, "observations stale: no estimate")
            return
        if self._observed_stamp == self._queried_stamp:
            return  # nothing new since the last estimate
        try:
            rec = self.monitor.query_history(timestamp=self._observed_stamp / 1e9)
        except Exception as exc:  # noqa: BLE001 - a failing policy must not take the monitor down
            self.counters["invalid"] += 1
            self._diagnose(DiagnosticStatus.ERROR, f"sampling failed: {type(exc).__name__}: {exc}")
            return
        self._queried_stamp = self._observed_stamp
        self.counters["queries"] += 1
        self.last = rec
        if rec.status != "ok":
            self.counters["invalid"] += 1
        self.pub_entropy.publish(Float32(data=float(rec.entropy)))
        payload = {k: v for k, v in asdict(rec).items() if k not in ("truth",)}
        payload["stamp_ns"] = int(self._observed_stamp)
        self.pub_rec.publish(String(data=json.dumps(payload)))
        if rec.status != "ok":
            self._diagnose(DiagnosticStatus.ERROR, rec.status)
        elif rec.recommended == "none":
            self._diagnose(DiagnosticStatus.OK, "no assistance needed")
        else:
            self._diagnose(DiagnosticStatus.WARN, f"recommended assistance: {rec.recommended}")

    def _diagnose(self, level: bytes, message: str) -> None:
        rec = self.last
        values = {**{k: str(v) for k, v in self.counters.items()}, "rejected": str(self.inputs.rejected)}
        if rec is not None:
            values.update(entropy=f"{rec.entropy:.4f}", recommended=rec.recommended, best=rec.best,
                          sample_ms=f"{rec.sample_ms:.1f}", estimate_ms=f"{rec.estimate_ms:.2f}")
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: assistance", message=message,
                                  hardware_id="embodied_steer",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)

    def close(self) -> None:
        stats = {**self.counters, "rejected": self.inputs.rejected, **self.monitor.summary()["recommended"]}
        print(f"STATS {self.get_name()} " + " ".join(f"{k}={v}" for k, v in stats.items()), flush=True)


def main(args: list[str] | None = None) -> int:
    return run_node(AssistMonitorNode, args)
