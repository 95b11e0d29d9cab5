"""The environment and policy catalogues: one Hydra YAML per environment and per policy.

They live at the top of the repository (``envs/``, ``policies/``) because users extend them most,
and are copied into the wheel as ``embodied_steer/_catalog``. Extra catalogue folders (each with
``envs/`` and/or ``policies/`` inside) can be added with the ``EMBODIED_STEER_CATALOG`` environment
variable (``os.pathsep``-separated); a later folder's file overrides an earlier one's of the same name.

Each YAML becomes an option of the Hydra config group ``env`` or ``policy``, so the command line
reads ``env=lift policy=lift_diffusion``. A third catalogue, ``steering/``, holds activation-steering
settings (the ``steer`` group: ``steer=<name>``, see :mod:`embodied_steer.steering.config`); its
entries are plain settings without a ``_target_``. Config values can name shipped files with the
``${asset:checkpoints/lift_diffusion}`` resolver, which finds them in the repository or the wheel.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from embodied_steer.core.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
GROUPS = {"env": "envs", "policy": "policies", "steer": "steering"}
#: Groups whose entries are built objects (need a ``_target_``); ``steer`` entries are plain settings.
BUILT = ("env", "policy")


def catalog_roots() -> list[Path]:
    """Folders that hold ``envs/``, ``policies/`` (and ``steering/``), lowest priority first."""
    roots = []
    packaged = PACKAGE_DIR / "_catalog"
    if packaged.is_dir():
        roots.append(packaged)
    if (REPO_ROOT / "envs").is_dir() and (REPO_ROOT / "pyproject.toml").is_file():
        roots.append(REPO_ROOT)
    for extra in filter(None, os.environ.get("EMBODIED_STEER_CATALOG", "").split(os.pathsep)):
        roots.append(Path(extra).expanduser().resolve())
    return roots


def find_asset(relative: str) -> str:
    """Absolute path of a shipped file or folder (``checkpoints/...``), searched in the catalogue roots."""
    for root in reversed(catalog_roots()):
        candidate = root / relative
        if candidate.exists():
            return str(candidate)
    raise ConfigError(f"shipped asset '{relative}' not found in {[str(r) for r in catalog_roots()]}")


def entries(group: str) -> dict[str, Path]:
    """Option name → YAML file for a config group (``"env"``, ``"policy"`` or ``"steer"``)."""
    folder = GROUPS[group]
    found: dict[str, Path] = {}
    for root in catalog_roots():
        for path in sorted((root / folder).glob("*.yaml")):
            found[path.stem] = path
    return found


def register() -> None:
    """Put every catalogue entry into Hydra's ConfigStore and register the ``asset`` resolver."""
    from hydra.core.config_store import ConfigStore

    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", find_asset)
    store = ConfigStore.instance()
    for group in GROUPS:
        for name, path in entries(group).items():
            try:
                node = OmegaConf.load(path)
            except Exception as exc:
                raise ConfigError(f"cannot parse {group} config {path}: {exc}") from exc
            if group in BUILT and "_target_" not in node:
                raise ConfigError(f"{group} config {path} has no _target_ (the class or factory to build)")
            store.store(group=group, name=name, node=node)
