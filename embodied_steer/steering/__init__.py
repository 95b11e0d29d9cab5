"""Activation steering: interventions on named modules and neurons, coefficients over an episode,
neuron and direction discovery, activation capture.

Everything reaches a policy through :meth:`SteerablePolicy.modules` (the ``ACTIVATIONS`` point).
"""

from embodied_steer.steering.addressing import AddressError, StepRange, resolve_modules, tower_members
from embodied_steer.steering.coefficients import (
    PID,
    Coefficient,
    Condition,
    Fixed,
    Gated,
    Schedule,
    as_coefficient,
    make_measure,
)
from embodied_steer.steering.interventions import (
    Intervention,
    SteeringHandle,
    ablate,
    add,
    attach,
    clamp,
    hook_counts,
    rotate,
    scale,
    steer,
)

__all__ = [
    "AddressError", "Coefficient", "Condition", "Fixed", "Gated", "Intervention", "PID", "Schedule", "SteeringHandle", "StepRange",
    "ablate", "add", "as_coefficient", "attach", "clamp", "hook_counts", "make_measure", "resolve_modules",
    "rotate", "scale", "steer", "tower_members",
]
