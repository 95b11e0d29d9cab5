"""OpenVLA's inputs and outputs: image preprocessing, the prompt, and action bins ↔ tokens.

* :class:`ImageTransform` — Prismatic's image processor: per tower, resize to the tower's size
  (``resize-naive``: straight to ``size × size``; ``resize-crop``: short side then centre crop;
  ``letterbox``: pad to a square with the mean colour first), bicubic with antialiasing on a PIL
  image (torchvision's functional ops, as the remote code does), ``[0, 1]`` tensor, per-tower
  normalisation (DINOv2: ImageNet mean/std; SigLIP: 0.5 / 0.5); towers stacked along channels.
* :class:`PromptTokenizer` — ``"In: What action should the robot take to {instruction}?\\nOut:"``,
  tokenised with the checkpoint's Llama tokenizer, ``<s>`` prepended and the empty token ``"▁"``
  (id 29871 in Llama-2) appended, exactly as ``predict_action`` does.
* :class:`ActionBins` — OpenVLA's de-tokeniser: with ``V = text vocab - pad_to_multiple_of``
  (32000), token ``id`` decodes to ``bin_centers[clip(V - id - 1, 0, n_bins - 2)]`` where the bin
  edges are ``linspace(-1, 1, n_bins)``; the action tokens are the last ``n_bins`` ids below ``V``.
* :func:`action_stats` / :func:`unnormalize` — the dataset's ``q01`` / ``q99`` (with ``mask``:
  dimensions where the mask is false, e.g. the gripper, pass through unchanged).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from embodied_steer.core.errors import CheckpointError, ConfigError, ObservationError

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
#: SentencePiece's word-boundary piece: OpenVLA appends it after "Out:" (Llama-2 id 29871).
EMPTY_TOKEN = "\u2581"
RESIZE_STRATEGIES = ("resize-naive", "resize-crop", "letterbox")


# =========================================================================== images
@dataclass(frozen=True)
class TowerTransform:
    """Preprocessing of one vision tower: square size, interpolation, normalisation mean / std."""

    size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ImageTransform:
    """``uint8 (H, W, 3)`` image → ``(3 * towers, size, size)`` float tensor, as Prismatic does it."""

    def __init__(self, towers: Sequence[TowerTransform], strategy: str) -> None:
        if strategy not in RESIZE_STRATEGIES:
            raise ConfigError(f"image_resize_strategy '{strategy}' is not one of {', '.join(RESIZE_STRATEGIES)}")
        if not towers:
            raise ConfigError("an image transform needs at least one tower")
        self.towers = tuple(towers)
        self.strategy = strategy

    @classmethod
    def for_checkpoint(cls, folder: Path | None, timm_ids: Sequence[str], sizes: Sequence[int],
                       strategy: str) -> "ImageTransform":
        """From the checkpoint's ``preprocessor_config.json`` when present, else timm's model defaults.

        Released OpenVLA folders carry ``preprocessor_config.json`` (``means``, ``stds``,
        ``interpolations``, ``input_sizes``); timm's pretrained config of each model id (read
        offline, no weights) gives the same values, which is what Prismatic derived them from.
        """
        config: Mapping[str, Any] = {}
        path = folder / "preprocessor_config.json" if folder is not None else None
        if path is not None and path.is_file():
            config = json.loads(path.read_text())
            strategy = str(config.get("image_resize_strategy", strategy))
        towers = []
        for i, (timm_id, size) in enumerate(zip(timm_ids, sizes)):
            default = _timm_defaults(timm_id)
            towers.append(TowerTransform(
                size=int(config["input_sizes"][i][-1]) if "input_sizes" in config else int(size),
                interpolation=str(config["interpolations"][i]) if "interpolations" in config else default[0],
                mean=tuple(float(v) for v in (config["means"][i] if "means" in config else default[1])),
                std=tuple(float(v) for v in (config["stds"][i] if "stds" in config else default[2])),
            ))
        return cls(towers, strategy)

    def __call__(self, image: np.ndarray, center_crop_scale: float | None = None) -> torch.Tensor:
        import torchvision.transforms.functional as TF
        from PIL import Image

        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            shape = getattr(image, "shape", type(image).__name__)
            dtype = getattr(image, "dtype", "")
            raise ObservationError(f"OpenVLA needs one uint8 RGB image of shape (H, W, 3), got {shape} {dtype}".strip())
        if image.shape[0] < 2 or image.shape[1] < 2:
            raise ObservationError(f"image of shape {image.shape} is too small to resize")
        pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
        if center_crop_scale is not None:
            # OpenVLA's evaluation of augmentation-trained checkpoints: keep the central
            # `scale` of the image area, then let the resize below bring it back to size.
            side = float(np.sqrt(center_crop_scale))
            pil = TF.center_crop(pil, [max(1, round(pil.height * side)), max(1, round(pil.width * side))])
        stacked = []
        for tower in self.towers:
            img = pil
            if self.strategy == "letterbox":
                img = _letterbox(img, tuple(int(255 * m) for m in tower.mean))
            mode = _interpolation(tower.interpolation)
            if self.strategy == "resize-naive":
                img = TF.resize(img, [tower.size, tower.size], interpolation=mode, antialias=True)
            else:
                img = TF.resize(img, tower.size, interpolation=mode, antialias=True)
            img = TF.center_crop(img, [tower.size, tower.size])
            tensor = TF.normalize(TF.to_tensor(img), list(tower.mean), list(tower.std))
            stacked.append(tensor)
        return torch.cat(stacked, dim=0)


def _letterbox(image: Any, fill: tuple[int, ...]) -> Any:
    import torchvision.transforms.functional as TF

    w, h = image.size
    side = max(w, h)
    pad_w, pad_h = int((side - w) / 2), int((side - h) / 2)
    return TF.pad(image, [pad_w, pad_h, pad_w, pad_h], fill=fill, padding_mode="constant")


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    try:
        return InterpolationMode(name)
    except ValueError as err:
        raise ConfigError(f"unknown image interpolation '{name}'") from err


def _timm_defaults(timm_id: str) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """``(interpolation, mean, std)`` from timm's registry entry for the id (no download)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_id)
    if cfg is None:
        raise ConfigError(f"timm has no pretrained config for '{timm_id}' to take image normalisation from; "
                          "add a preprocessor_config.json with 'means' / 'stds' to the checkpoint")
    return str(cfg.interpolation or "bicubic"), tuple(cfg.mean), tuple(cfg.std)


# =========================================================================== prompt
class PromptTokenizer:
    """OpenVLA's prompt → input ids ``(L,)`` with ``<s>`` first and ``"▁"`` last."""

    def __init__(self, tokenizer: Any, bos_id: int, empty_id: int, lowercase: bool = True) -> None:
        self.tokenizer = tokenizer
        self.bos_id = int(bos_id)
        self.empty_id = int(empty_id)
        self.lowercase = lowercase

    @classmethod
    def from_folder(cls, folder: Path, bos_id: int = 1, lowercase: bool = True) -> "PromptTokenizer":
        """Load ``tokenizer.json`` (Llama-2 fast tokenizer) with the ``tokenizers`` library."""
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"'{folder}' has no tokenizer.json (the Llama tokenizer OpenVLA folders ship)")
        tokenizer = Tokenizer.from_file(str(path))
        bos = _bos_from_config(folder, tokenizer, bos_id)
        empty = tokenizer.token_to_id(EMPTY_TOKEN)
        if empty is None:
            raise CheckpointError(f"tokenizer in '{folder}' has no '{EMPTY_TOKEN}' token (not a Llama tokenizer?)")
        return cls(tokenizer, bos, empty, lowercase)

    def prompt(self, instruction: str) -> str:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ObservationError("OpenVLA needs a language instruction: Observation.instruction is empty")
        text = instruction.strip()
        return PROMPT_TEMPLATE.format(instruction=text.lower() if self.lowercase else text)

    def __call__(self, instruction: str) -> torch.Tensor:
        ids = list(self.tokenizer.encode(self.prompt(instruction), add_special_tokens=False).ids)
        ids = [self.bos_id] + ids
        if ids[-1] != self.empty_id:
            ids.append(self.empty_id)
        return torch.tensor(ids, dtype=torch.long)


def _bos_from_config(folder: Path, tokenizer: Any, default: int) -> int:
    config = folder / "tokenizer_config.json"
    token = None
    if config.is_file():
        data = json.loads(config.read_text())
        bos = data.get("bos_token")
        token = bos.get("content") if isinstance(bos, Mapping) else bos
    bos_id = tokenizer.token_to_id(token) if token else None
    return int(bos_id) if bos_id is not None else int(default)


# =========================================================================== actions
class ActionBins:
    """OpenVLA's uniform action bins and their tokens.

    Args:
        vocab_end: ``V``, the text vocabulary without padding (``vocab_size - pad_to_multiple_of``).
        n_bins: number of bin *edges* (256), giving ``n_bins - 1`` centres.
    """

    def __init__(self, vocab_end: int, n_bins: int = 256) -> None:
        if n_bins < 2 or vocab_end <= n_bins:
            raise ConfigError(f"need 2 <= n_action_bins < vocabulary size, got {n_bins} bins and V={vocab_end}")
        self.vocab_end = int(vocab_end)
        self.n_bins = int(n_bins)
        self.edges = np.linspace(-1.0, 1.0, n_bins)
        self.centers = (self.edges[:-1] + self.edges[1:]) / 2.0

    @property
    def token_range(self) -> tuple[int, int]:
        """``[first, last]`` token ids that encode actions (``[V - n_bins, V - 1]``)."""
        return self.vocab_end - self.n_bins, self.vocab_end - 1

    def is_action_token(self, ids: np.ndarray | torch.Tensor) -> np.ndarray:
        first, last = self.token_range
        ids = np.asarray(ids)
        return (ids >= first) & (ids <= last)

    def bin_index(self, ids: np.ndarray | torch.Tensor) -> np.ndarray:
        """Token ids → index into :attr:`centers` (OpenVLA clips ids outside the range to the ends)."""
        return np.clip(self.vocab_end - np.asarray(ids, dtype=np.int64) - 1, 0, self.centers.shape[0] - 1)

    def decode(self, ids: np.ndarray | torch.Tensor) -> np.ndarray:
        """Token ids ``(..., D)`` → normalised actions in ``[-1, 1]`` ``(..., D)``."""
        return self.centers[self.bin_index(ids)]

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions → token ids, as OpenVLA's ``ActionTokenizer`` (``digitize`` on the edges)."""
        digitized = np.digitize(np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0), self.edges)
        return self.vocab_end - digitized


def action_stats(norm_stats: Mapping[str, Any], dataset_key: str | None) -> tuple[str, dict[str, np.ndarray]]:
    """The ``action`` statistics of one dataset: ``(key, {"q01", "q99", "mask"})`` as arrays.

    ``dataset_key=None`` picks the only dataset of a single-dataset checkpoint. Raises
    :class:`ConfigError` listing the available keys on a bad or ambiguous key.
    """
    keys = sorted(norm_stats)
    if not keys:
        raise ConfigError("the checkpoint's config.json has no norm_stats: actions cannot be un-normalised")
    if dataset_key is None:
        if len(keys) != 1:
            raise ConfigError(f"this checkpoint has statistics for {len(keys)} datasets; choose dataset_key from: "
                              + ", ".join(keys))
        dataset_key = keys[0]
    if dataset_key not in norm_stats:
        raise ConfigError(f"unknown dataset_key '{dataset_key}'; the checkpoint has statistics for: " + ", ".join(keys))
    entry = norm_stats[dataset_key].get("action") if isinstance(norm_stats[dataset_key], Mapping) else None
    if not isinstance(entry, Mapping) or "q01" not in entry or "q99" not in entry:
        raise ConfigError(f"norm_stats['{dataset_key}'] has no action q01 / q99")
    low = np.asarray(entry["q01"], dtype=np.float64)
    high = np.asarray(entry["q99"], dtype=np.float64)
    mask = np.asarray(entry.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)
    if low.ndim != 1 or low.shape != high.shape or mask.shape != low.shape:
        raise ConfigError(f"norm_stats['{dataset_key}'].action: q01 {low.shape}, q99 {high.shape} and mask "
                          f"{mask.shape} must be equal-length vectors")
    return dataset_key, {"q01": low, "q99": high, "mask": mask}


def unnormalize(normalized: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    """``[-1, 1]`` actions → dataset units: ``0.5 (x + 1)(q99 - q01) + q01`` where ``mask``, else ``x``."""
    x = np.asarray(normalized, dtype=np.float64)
    low, high, mask = stats["q01"], stats["q99"], stats["mask"]
    return np.where(mask, 0.5 * (x + 1.0) * (high - low) + low, x)


def libero_gripper(actions: np.ndarray) -> np.ndarray:
    """OpenVLA's LIBERO post-processing of the last (gripper) dim: ``g`` in ``[0, 1]`` (OpenVLA:
    1 = open, 0 = closed) → ``-sign(2g - 1)`` (robosuite / LIBERO: -1 = open, +1 = closed)."""
    out = np.array(actions, dtype=np.float64, copy=True)
    g = 2.0 * out[..., -1] - 1.0
    out[..., -1] = -np.sign(g)
    return out
