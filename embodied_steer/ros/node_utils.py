"""Small helpers shared by the nodes: parameter declaration, ready lines, spinning until SIGINT."""

from __future__ import annotations

import sys
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def declare(node: Node, defaults: dict[str, Any]) -> dict[str, Any]:
    """Declare every parameter of ``defaults`` (name -> default value) and return current values."""
    for name, value in defaults.items():
        node.declare_parameter(name, value)
    return {name: node.get_parameter(name).value for name in defaults}


def announce(line: str) -> None:
    """Print a line that process supervisors (tests, benchmarks) wait for."""
    print(line, flush=True)
    sys.stdout.flush()


def run_node(make: Callable[[], Node], args: list[str] | None = None) -> int:
    """``rclpy.init``, build the node, spin until SIGINT / shutdown, clean up; return an exit code."""
    rclpy.init(args=args)
    node = None
    try:
        node = make()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
