"""Steering control node: switch interventions on and off and change them at run time.

A UI (or an operator with ``ros2 topic pub``) selects what the policy server should do; this node
validates the request, forwards it to the policy server, and reports what was applied. The policy
server checks every change against its loaded policy and applies it from the next action chunk, so a
selection can never interrupt a chunk half-way.

Inputs:

* ``steering/select`` (``std_msgs/String``): a preset name from ``presets_file``, or a JSON object
  with intervention settings — the keys of ``embodied-steer eval``'s intervention block (e.g.
  ``{"noise_scale": 0.5}``, ``{"dsrl": "<adapter folder>"}``), ``steer`` (activation steering) and
  ``guide`` (reward-guided sampling: a guide config name or settings, optionally with the reward
  program's text as ``program_source``); see :mod:`embodied_steer.ros.policy_server`. ``{}`` returns
  to the untouched policy.
* ``~/enable`` (``std_srvs/SetBool``): interventions on / off (forwarded to ``<server>/set_steering``).

Output: ``steering/state`` (``std_msgs/String``, JSON, transient-local so a UI that connects later gets
the latest): ``{"seq", "preset", "settings", "enabled", "applied", "reason"}`` after every request.

``presets_file`` (YAML)::

    presets:
      untouched: {}
      focused: {noise_scale: 0.5}

Parameters: :data:`~embodied_steer.ros.params.STEERING_CONTROL`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import SetBool

from embodied_steer.ros.node_utils import announce, declare, run_node
from embodied_steer.ros.params import STEERING_CONTROL as DEFAULTS

STATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MAX_REQUEST_CHARS = 100_000


class SteeringRequestError(ValueError):
    """A selection that is not a known preset nor a JSON object of settings."""


def load_presets(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read ``presets:`` (name → settings mapping) from a YAML file; errors name the file and the entry."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    presets = data.get("presets") if isinstance(data, dict) else None
    if not isinstance(presets, dict):
        raise SteeringRequestError(f"{path}: expected a top-level 'presets:' mapping of name -> settings")
    for name, settings in presets.items():
        if not isinstance(settings, dict):
            raise SteeringRequestError(f"{path}: preset {name!r} must be a mapping of settings, got "
                                       f"{type(settings).__name__}")
    return {str(k): dict(v) for k, v in presets.items()}


def parse_selection(text: str, presets: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Turn a ``steering/select`` message into ``(preset name or "custom", settings)``."""
    text = text.strip()
    if len(text) > MAX_REQUEST_CHARS or "\x00" in text:
        raise SteeringRequestError("request too long or contains NUL")
    if text in presets:
        return text, presets[text]
    if text.startswith("{"):
        try:
            settings = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SteeringRequestError(f"not valid JSON: {exc}") from None
        if not isinstance(settings, dict):
            raise SteeringRequestError("settings must be a JSON object")
        return "custom", settings
    known = ", ".join(sorted(presets)) or "(no presets_file loaded)"
    raise SteeringRequestError(f"unknown preset {text!r}; known presets: {known}; or send a JSON object")


class SteeringControl(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = "steering_control", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare(self, DEFAULTS)
        self.presets = load_presets(self.p["presets_file"]) if self.p["presets_file"] else {}
        server = self.p["server"]
        self.set_params = self.create_client(SetParameters, f"{server}/set_parameters")
        self.set_steering = self.create_client(SetBool, f"{server}/set_steering")
        self.pub_state = self.create_publisher(String, "steering/state", STATE_QOS)
        self.create_subscription(String, "steering/select", self._on_select, 10)
        self.create_service(SetBool, "~/enable", self._srv_enable)
        self.state: dict[str, Any] = {"seq": 0, "preset": "", "settings": {}, "enabled": bool(self.p["enabled"]),
                                      "applied": True, "reason": ""}
        self.counters = {"requests": 0, "applied": 0, "refused": 0}
        self._initial = self.p["initial_preset"]
        if self._initial:
            parse_selection(self._initial, self.presets)  # an unknown initial preset is an error at start
            self._init_timer = self.create_timer(0.2, self._apply_initial)
        announce(f"READY {self.get_name()} steering '{server}' ({len(self.presets)} presets)")

    def _apply_initial(self) -> None:
        if self.set_params.service_is_ready():
            self.destroy_timer(self._init_timer)
            self._select(self._initial)

    # ------------------------------------------------------------------ requests
    def _on_select(self, msg: String) -> None:
        self._select(msg.data)

    def _select(self, text: str) -> None:
        self.counters["requests"] += 1
        try:
            preset, settings = parse_selection(text, self.presets)
        except SteeringRequestError as exc:
            self._report(False, str(exc), preset=self.state["preset"], settings=self.state["settings"])
            return
        if not self.set_params.service_is_ready():
            self._report(False, f"policy server '{self.p['server']}' is not available", preset=self.state["preset"],
                         settings=self.state["settings"])
            return
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=json.dumps(settings))
        future = self.set_params.call_async(
            SetParameters.Request(parameters=[ParameterMsg(name="steering.settings", value=value)]))
        future.add_done_callback(lambda f: self._on_set_done(f, preset, settings))

    def _on_set_done(self, future, preset: str, settings: dict[str, Any]) -> None:
        try:
            result = future.result().results[0]
        except Exception as exc:  # noqa: BLE001 - a lost server must be reported, not crash the node
            self._report(False, f"set_parameters failed: {exc}", preset=self.state["preset"],
                         settings=self.state["settings"])
            return
        if result.successful:
            self._report(True, "", preset=preset, settings=settings)
        else:  # the server refused: it keeps (and we report) the previous settings
            self._report(False, result.reason, preset=self.state["preset"], settings=self.state["settings"])

    def _srv_enable(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        if not self.set_steering.service_is_ready():
            res.success, res.message = False, f"policy server '{self.p['server']}' is not available"
            return res
        future = self.set_steering.call_async(SetBool.Request(data=bool(req.data)))

        def done(f) -> None:
            ok = bool(f.result().success) if f.exception() is None else False
            if ok:
                self.state["enabled"] = bool(req.data)
            self._report(ok, "" if ok else f"set_steering failed: {f.exception() or f.result().message}",
                         preset=self.state["preset"], settings=self.state["settings"])

        future.add_done_callback(done)
        res.success, res.message = True, f"steering {'on' if req.data else 'off'} requested"
        return res

    def _report(self, applied: bool, reason: str, *, preset: str, settings: dict[str, Any]) -> None:
        self.counters["applied" if applied else "refused"] += 1
        self.state.update(seq=self.state["seq"] + 1, preset=preset, settings=settings, applied=applied, reason=reason)
        if not applied:
            self.get_logger().warning(f"steering request refused: {reason}")
        self.pub_state.publish(String(data=json.dumps(self.state)))

    def close(self) -> None:
        print(f"STATS {self.get_name()} " + " ".join(f"{k}={v}" for k, v in self.counters.items()), flush=True)


def main(args: list[str] | None = None) -> int:
    return run_node(SteeringControl, args)
