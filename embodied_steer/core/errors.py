"""Exceptions with messages that name what was wrong. All derive from :class:`SteerError`."""


class SteerError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class ObservationError(SteerError, ValueError):
    """An observation has a missing key, a wrong shape or dtype, or non-finite values."""


class ActionError(SteerError, ValueError):
    """An action chunk has a wrong shape or contains NaN / inf."""


class UnsupportedIntervention(SteerError, NotImplementedError):
    """A capability asked a policy for an intervention point it does not declare."""


class CheckpointError(SteerError, FileNotFoundError):
    """A policy checkpoint is missing or incomplete."""


class ConfigError(SteerError, ValueError):
    """A configuration names something that does not exist or has an invalid value."""


class NoiseBoundsError(SteerError, ValueError):
    """A latent noise action (DSRL) lies outside its box ``[-b, b]``, has the wrong shape, or is not finite."""


class RewardError(SteerError, ValueError):
    """An environment returned a NaN or infinite reward."""
