"""Finding a LeRobot-format policy checkpoint: a local folder, or a hub id when a hub is reachable."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from embodied_steer.core.errors import CheckpointError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(
    path_or_hub_id: str | os.PathLike,
    revision: str | None = None,
    *,
    required: Sequence[str] = ("config.json", "model.safetensors"),
    allow_patterns: Sequence[str] = ("*.json", "*.safetensors"),
) -> Path:
    """A local checkpoint folder for ``path_or_hub_id``; hub ids go through ``snapshot_download``.

    ``required`` files must be in the folder (default: a LeRobot checkpoint's); ``allow_patterns``
    are the files fetched for a hub id (e.g. add ``"*.model"`` for a SentencePiece tokenizer).
    """
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        missing = [f for f in required if not (path / f).is_file()]
        if missing:
            raise CheckpointError(f"checkpoint folder '{path}' is incomplete: missing {', '.join(missing)}")
        return path
    if path.exists():
        raise CheckpointError(f"'{path}' is a file; a checkpoint is a folder with {' and '.join(required)}")
    text = str(path_or_hub_id)
    if not _HUB_ID.match(text):
        raise CheckpointError(f"no checkpoint folder at '{text}'")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(text, revision=revision, allow_patterns=list(allow_patterns))
    except Exception as err:  # offline, unknown repo, gated repo, network errors
        raise CheckpointError(
            f"no checkpoint folder at '{text}', and fetching it as a hub repo failed "
            f"({type(err).__name__}: {err}). Offline (HF_HUB_OFFLINE=1) only cached repos load."
        ) from err
    return resolve_checkpoint(local, revision, required=required, allow_patterns=allow_patterns)
