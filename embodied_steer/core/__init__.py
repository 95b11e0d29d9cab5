"""The policy interface and the typed containers that flow through it."""

from embodied_steer.core.errors import (
    ActionError,
    CheckpointError,
    ConfigError,
    ObservationError,
    SteerError,
    UnsupportedIntervention,
)
from embodied_steer.core.policy import (
    DenoiseCallback,
    DenoiseStep,
    InterventionPoint,
    NoiseSpec,
    PolicyInfo,
    SteerablePolicy,
    StepEdit,
)
from embodied_steer.core.types import ActionBounds, ActionChunk, ActionSamples, Observation

__all__ = [
    "ActionBounds", "ActionChunk", "ActionError", "ActionSamples", "CheckpointError", "ConfigError",
    "DenoiseCallback", "DenoiseStep", "InterventionPoint", "NoiseSpec", "Observation", "ObservationError",
    "PolicyInfo", "SteerError", "SteerablePolicy", "StepEdit", "UnsupportedIntervention",
]
