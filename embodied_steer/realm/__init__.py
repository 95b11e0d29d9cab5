"""REALM assistance estimation: how uncertain is the policy, and which human input would help most.

* :mod:`~embodied_steer.realm.entropy` — differential-entropy estimators for sampled chunks.
* :mod:`~embodied_steer.realm.modes` — expected entropy after none / discrete / correction /
  teleop assistance, ``L(m)``, ``V(m)``, the hysteresis recommender, options and directions.
* :mod:`~embodied_steer.realm.monitor` — the online monitor, its JSON-lines log and plot.
"""

from embodied_steer.realm.entropy import (
    EntropyInputError,
    EntropyLimits,
    estimate_entropy,
    gaussian_entropy,
    knn_entropy,
    spacing_entropy,
)
from embodied_steer.realm.modes import Assessment, AssistConfig, Mode, Recommender, assess
from embodied_steer.realm.monitor import AssistanceMonitor, MonitorRecord, load_records, plot_assistance

__all__ = [
    "Assessment", "AssistConfig", "AssistanceMonitor", "EntropyInputError", "EntropyLimits", "Mode",
    "MonitorRecord", "Recommender", "assess", "estimate_entropy", "gaussian_entropy", "knn_entropy",
    "load_records", "plot_assistance", "spacing_entropy",
]
