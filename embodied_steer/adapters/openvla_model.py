"""OpenVLA's network rebuilt natively from ``transformers`` (Llama) and ``timm`` (vision towers).

OpenVLA checkpoints on the hub ship Prismatic "remote code" that needs ``transformers==4.40`` and
``timm<1.0``. This module reads the same checkpoint folder without that code:

* :class:`OpenVLAConfig` parses ``config.json`` (the schema of ``openvla/openvla-7b``).
* :class:`OpenVLANetwork` builds the same modules, under the same attribute names:
  ``vision_backbone.featurizer`` (DINOv2 with registers) and ``vision_backbone.fused_featurizer``
  (SigLIP) from ``timm.create_model(id, pretrained=False, num_classes=0, img_size=...)``,
  ``projector.fc1/fc2/fc3`` (the fused GELU MLP) and ``language_model`` (``LlamaForCausalLM``).
* :func:`load_checkpoint_weights` reads the safetensors shards listed in
  ``model.safetensors.index.json`` (or one ``model.safetensors``) and loads them *strictly*.

Weight names
------------
A checkpoint key is the network's ``state_dict`` key with one rename: timm's ``LayerScale`` stores
its per-channel scale as ``gamma``, and Prismatic renamed it to ``scale_factor`` (Hugging Face's
loader used to rewrite any parameter called ``gamma``)::

    vision_backbone.featurizer.blocks.3.ls1.scale_factor   <->  ...blocks.3.ls1.gamma

Everything else (``vision_backbone.fused_featurizer.attn_pool.*``, ``projector.fc1.weight``,
``language_model.model.layers.0.mlp.down_proj.weight``, ``language_model.lm_head.weight`` …) maps
one to one. Missing or unexpected keys and shape mismatches raise :class:`CheckpointError` naming
them.

Shrinking the vision towers (tests only)
----------------------------------------
A timm model id fixes its architecture (``vit_large_patch14_reg4_dinov2`` is 24 blocks of width
1024). Tiny test checkpoints add one key real checkpoints don't have, ``"embodied_steer_timm_kwargs"``:
a list (one dict per tower) of keyword arguments passed on to ``timm.create_model`` after
Prismatic's own (e.g. ``{"embed_dim": 32, "depth": 3, "num_heads": 2}``). Everything else — ids,
loading, preprocessing — takes the same path as a real checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from embodied_steer.core.errors import CheckpointError, ConfigError

#: The config key (ours, absent from real checkpoints) with per-tower ``timm.create_model`` overrides.
TIMM_KWARGS_KEY = "embodied_steer_timm_kwargs"

# Prismatic's fixed tables for configs that name only ``vision_backbone_id`` (older exports).
_BACKBONE_TIMM_IDS: dict[str, tuple[tuple[str, ...], tuple[int, ...], tuple[str | None, ...]]] = {
    "dinosiglip-vit-so-224px": (
        ("vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"), (224, 224), (None, None)),
    "dinosiglip-vit-so-384px": (
        ("vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_384"), (384, 384), (None, None)),
    "siglip-vit-so400m": (("vit_so400m_patch14_siglip_224",), (224,), (None,)),
    "dinov2-vit-l": (("vit_large_patch14_reg4_dinov2.lvd142m",), (224,), (None,)),
}
_LLAMA_BACKBONES = ("llama2-", "vicuna-")

# LlamaConfig defaults of transformers 4.40 (what OpenVLA's remote code filled in for the keys its
# config.json leaves out: the 7B release stores only vocab_size / pad_token_id / dtype). Pinned
# here so that a later transformers changing a default cannot silently change the network.
LLAMA_DEFAULTS_440: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


# =========================================================================== config
@dataclass(frozen=True)
class OpenVLAConfig:
    """The parts of an OpenVLA ``config.json`` this loader uses.

    Attributes:
        vision_backbone_id: Prismatic's id, e.g. ``"dinosiglip-vit-so-224px"``.
        llm_backbone_id: e.g. ``"llama2-7b-pure"`` (Llama family only).
        arch_specifier: e.g. ``"no-align+fused-gelu-mlp"`` (GELU-MLP projectors only).
        use_fused_vision_backbone: two towers whose patch features are concatenated.
        image_resize_strategy: ``"resize-naive"`` | ``"resize-crop"`` | ``"letterbox"``.
        timm_model_ids / image_sizes / timm_override_act_layers: one entry per tower.
        text_config: Llama config dict, with OpenVLA-era defaults filled in.
        pad_token_id: id of the ``<PAD>`` token added after the base vocabulary.
        pad_to_multiple_of: the embedding matrix was padded up to a multiple of this.
        n_action_bins: number of bin edges (256 → 255 bin centres).
        norm_stats: dataset key → ``{"action": {"q01", "q99", "mask", ...}, "proprio": ...}``.
        timm_kwargs: per-tower extra ``timm.create_model`` kwargs (tiny checkpoints only).
    """

    vision_backbone_id: str
    llm_backbone_id: str
    arch_specifier: str
    use_fused_vision_backbone: bool
    image_resize_strategy: str
    timm_model_ids: tuple[str, ...]
    image_sizes: tuple[int, ...]
    timm_override_act_layers: tuple[str | None, ...]
    text_config: dict[str, Any]
    pad_token_id: int
    pad_to_multiple_of: int
    n_action_bins: int
    norm_stats: dict[str, Any]
    timm_kwargs: tuple[dict[str, Any], ...] = ()
    torch_dtype: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config.json") -> "OpenVLAConfig":
        """Validate and normalise a parsed ``config.json``; :class:`ConfigError` names a bad field."""
        def need(key: str) -> Any:
            if key not in data:
                raise ConfigError(f"{source}: missing '{key}' (not an OpenVLA / Prismatic config?)")
            return data[key]

        vision_id = str(need("vision_backbone_id"))
        llm_id = str(need("llm_backbone_id"))
        table = _BACKBONE_TIMM_IDS.get(vision_id)
        ids = data.get("timm_model_ids") or (table[0] if table else None)
        sizes = data.get("image_sizes") or (table[1] if table else None)
        acts = data.get("timm_override_act_layers") or (table[2] if table else None)
        if ids is None or sizes is None:
            raise ConfigError(f"{source}: no 'timm_model_ids' / 'image_sizes' and unknown vision_backbone_id "
                              f"'{vision_id}'")
        ids, sizes = tuple(str(i) for i in ids), tuple(int(s) for s in sizes)
        acts = tuple(acts) if acts is not None else (None,) * len(ids)
        fused = data.get("use_fused_vision_backbone")
        if fused is None:
            fused = vision_id.startswith(("dinoclip", "dinosiglip"))
        expected_towers = 2 if fused else 1
        for name, value in (("timm_model_ids", ids), ("image_sizes", sizes), ("timm_override_act_layers", acts)):
            if len(value) != expected_towers:
                raise ConfigError(f"{source}: '{name}' has {len(value)} entries, expected {expected_towers} "
                                  f"(use_fused_vision_backbone={bool(fused)})")
        arch = str(data.get("arch_specifier", "no-align+gelu-mlp"))
        if not arch.endswith("gelu-mlp"):
            raise ConfigError(f"{source}: arch_specifier '{arch}' is not supported (only '*gelu-mlp' projectors)")
        if not llm_id.startswith(_LLAMA_BACKBONES):
            raise ConfigError(f"{source}: llm_backbone_id '{llm_id}' is not a Llama-family backbone (supported: "
                              f"{', '.join(p + '*' for p in _LLAMA_BACKBONES)})")
        text = dict(data.get("text_config") or {})
        model_type = text.get("model_type", "llama")
        if model_type != "llama":
            raise ConfigError(f"{source}: text_config.model_type is '{model_type}', only 'llama' is supported")
        text = {**LLAMA_DEFAULTS_440, **text, "model_type": "llama"}
        timm_kwargs = data.get(TIMM_KWARGS_KEY) or [{} for _ in ids]
        if len(timm_kwargs) != len(ids) or not all(isinstance(k, Mapping) for k in timm_kwargs):
            raise ConfigError(f"{source}: '{TIMM_KWARGS_KEY}' must be a list of {len(ids)} dicts")
        pad_multiple = int(data.get("pad_to_multiple_of", 64))
        vocab = int(text["vocab_size"])
        if vocab <= pad_multiple:
            raise ConfigError(f"{source}: text_config.vocab_size {vocab} must exceed pad_to_multiple_of {pad_multiple}")
        return cls(
            vision_backbone_id=vision_id,
            llm_backbone_id=llm_id,
            arch_specifier=arch,
            use_fused_vision_backbone=bool(fused),
            image_resize_strategy=str(data.get("image_resize_strategy", "letterbox")),
            timm_model_ids=ids,
            image_sizes=sizes,
            timm_override_act_layers=acts,
            text_config=text,
            pad_token_id=int(data.get("pad_token_id", 32000)),
            pad_to_multiple_of=pad_multiple,
            n_action_bins=int(data.get("n_action_bins", 256)),
            norm_stats=dict(data.get("norm_stats") or {}),
            timm_kwargs=tuple(dict(k) for k in timm_kwargs),
            torch_dtype=data.get("torch_dtype"),
            raw=dict(data),
        )

    @classmethod
    def from_folder(cls, folder: str | Path) -> "OpenVLAConfig":
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise CheckpointError(f"'{folder}' has no config.json")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(data, source=str(path))

    @property
    def action_vocab_end(self) -> int:
        """OpenVLA's ``vocab_size`` for de-tokenisation: the base vocabulary without the padding."""
        return int(self.text_config["vocab_size"]) - self.pad_to_multiple_of

    def llama_config(self) -> Any:
        from transformers import LlamaConfig

        text = {k: v for k, v in self.text_config.items() if k not in ("model_type", "torch_dtype", "architectures")}
        return LlamaConfig(**text)


# =========================================================================== modules
def tower_kind(timm_id: str) -> str:
    """Short name of a vision tower for module names: ``dino``, ``siglip``, ``clip`` or ``vit``."""
    lowered = timm_id.lower()
    for kind in ("dino", "siglip", "clip"):
        if kind in lowered:
            return kind
    return "vit"


def create_tower(timm_id: str, image_size: int, act_layer: str | None, extra: Mapping[str, Any]) -> nn.Module:
    """One timm ViT as Prismatic creates it (``pretrained=False``: nothing is downloaded)."""
    import timm

    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, "img_size": image_size}
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    kwargs.update(extra)
    try:
        return timm.create_model(timm_id, **kwargs)
    except RuntimeError as err:  # unknown model name
        raise ConfigError(f"timm cannot build '{timm_id}': {err}") from err


class VisionBackbone(nn.Module):
    """One or two (fused) timm ViTs returning the second-to-last block's patch tokens.

    Input ``pixel_values`` is ``(B, 3 * towers, H, W)``: the towers' normalised images stacked
    along channels (tower 0 first). Output ``(B, num_patches, sum of embed dims)``; prefix tokens
    (class, registers) are dropped. The towers' last block and final norm / pooling never run.
    """

    def __init__(self, config: OpenVLAConfig) -> None:
        super().__init__()
        towers = [
            create_tower(i, s, a, k)
            for i, s, a, k in zip(config.timm_model_ids, config.image_sizes, config.timm_override_act_layers,
                                  config.timm_kwargs or [{}] * len(config.timm_model_ids))
        ]
        self.featurizer = towers[0]
        self.fused_featurizer = towers[1] if config.use_fused_vision_backbone else None
        self.embed_dim = sum(int(t.embed_dim) for t in towers)

    def towers(self) -> list[nn.Module]:
        return [self.featurizer] + ([self.fused_featurizer] if self.fused_featurizer is not None else [])

    @staticmethod
    def patch_features(tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, P, D)`` output of block ``depth - 2`` without prefix tokens."""
        index = len(tower.blocks) - 2
        (features,) = tower.forward_intermediates(
            images, indices=[index], stop_early=True, intermediates_only=True, output_fmt="NLC", norm=False
        )
        return features

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        towers = self.towers()
        chunks = torch.split(pixel_values, [3] * len(towers), dim=1)
        return torch.cat([self.patch_features(t, x) for t, x in zip(towers, chunks)], dim=2)


class Projector(nn.Module):
    """Prismatic's GELU MLP from vision features to the LLM width.

    Fused backbones: ``fc1 (D → 4D) → GELU → fc2 (4D → H) → GELU → fc3 (H → H)``; a single tower:
    ``fc1 (D → H) → GELU → fc2 (H → H)``. Maps ``(B, P, D)`` to ``(B, P, H)``.
    """

    def __init__(self, fused: bool, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act(self.fc1(features)))
        if self.fused:
            x = self.fc3(self.act(x))
        return x


class OpenVLANetwork(nn.Module):
    """Vision backbone + projector + Llama, with the checkpoint's attribute names."""

    def __init__(self, config: OpenVLAConfig) -> None:
        super().__init__()
        from transformers import LlamaForCausalLM

        self.config = config
        self.vision_backbone = VisionBackbone(config)
        llama_config = config.llama_config()
        self.projector = Projector(config.use_fused_vision_backbone, self.vision_backbone.embed_dim,
                                   int(llama_config.hidden_size))
        self.language_model = LlamaForCausalLM(llama_config)

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3 * towers, H, W)`` → projected patch embeddings ``(B, P, hidden_size)``."""
        return self.projector(self.vision_backbone(pixel_values))


# =========================================================================== weight names
def checkpoint_name(network_key: str) -> str:
    """The checkpoint's name for a network ``state_dict`` key (LayerScale ``gamma`` → ``scale_factor``)."""
    if network_key.startswith("vision_backbone.") and network_key.endswith(".gamma"):
        return network_key[: -len("gamma")] + "scale_factor"
    return network_key


def expected_checkpoint_shapes(network: nn.Module) -> dict[str, tuple[int, ...]]:
    """Checkpoint key → shape for every tensor the checkpoint must hold (works on a meta-device network)."""
    return {checkpoint_name(k): tuple(v.shape) for k, v in network.state_dict().items()}


def build_network(config: OpenVLAConfig, device: str | torch.device = "meta") -> OpenVLANetwork:
    """Construct the network without initialising weights worth keeping (on ``meta`` by default)."""
    with torch.device(device):
        return OpenVLANetwork(config)


# =========================================================================== loading
def weight_files(folder: Path) -> dict[str, Path]:
    """Checkpoint key → shard file, from ``model.safetensors.index.json`` or a single ``model.safetensors``."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index} is not a safetensors index (needs a 'weight_map'): {err}") from err
        files = {name: folder / shard for name, shard in weight_map.items()}
        missing = sorted({str(p.name) for p in files.values() if not p.is_file()})
        if missing:
            raise CheckpointError(f"{index} lists shard files that are not in '{folder}': {', '.join(missing)}")
        return files
    single = folder / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            return {name: single for name in handle.keys()}
    raise CheckpointError(f"'{folder}' has neither model.safetensors.index.json nor model.safetensors")


def _describe(names: Sequence[str], limit: int = 8) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" … ({len(names) - limit} more)" if len(names) > limit else "")


def read_checkpoint_tensors(folder: Path, expected: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint, checked against ``expected`` names and shapes (strict)."""
    from safetensors import safe_open

    files = weight_files(folder)
    missing = set(expected) - set(files)
    unexpected = set(files) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_describe(unexpected)}")
        raise CheckpointError(f"checkpoint '{folder}' does not match the network built from its config.json: "
                              + "; ".join(parts))
    tensors: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt") as handle:
            present = set(handle.keys())
            absent = [n for n in names if n not in present]
            if absent:
                raise CheckpointError(f"shard '{path.name}' lacks keys its index assigns to it: {_describe(absent)}")
            for name in names:
                tensors[name] = handle.get_tensor(name)
    wrong = [f"{n}: checkpoint {tuple(t.shape)} vs network {expected[n]}"
             for n, t in tensors.items() if tuple(t.shape) != tuple(expected[n])]
    if wrong:
        raise CheckpointError(f"checkpoint '{folder}' has tensors of the wrong shape: {_describe(wrong, 5)}")
    return tensors


def checkpoint_problems(folder: str | Path, config: OpenVLAConfig | None = None) -> list[str]:
    """Compare a folder's tensor names and shapes with the network its config builds, reading only
    the safetensors headers (no weights). Returns one line per problem; empty when it would load."""
    from safetensors import safe_open

    folder = Path(folder)
    config = config or OpenVLAConfig.from_folder(folder)
    expected = expected_checkpoint_shapes(build_network(config, "meta"))
    try:
        files = weight_files(folder)
    except CheckpointError as err:
        return [str(err)]
    problems = [f"missing: {n} {expected[n]}" for n in sorted(set(expected) - set(files))]
    problems += [f"unexpected: {n}" for n in sorted(set(files) - set(expected))]
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        if name in expected:
            by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        with safe_open(str(path), framework="pt") as handle:
            present = set(handle.keys())
            for name in names:
                if name not in present:
                    problems.append(f"not in {path.name}: {name}")
                    continue
                shape = tuple(handle.get_slice(name).get_shape())
                if shape != expected[name]:
                    problems.append(f"shape: {name} checkpoint {shape} vs network {expected[name]}")
    return problems


def resolve_dtype(dtype: str | torch.dtype | None, config: OpenVLAConfig) -> torch.dtype:
    """``"auto"`` / ``None`` → the checkpoint's ``torch_dtype`` (float32 when absent)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = config.torch_dtype if dtype in (None, "auto") else dtype
    name = str(name or "float32").removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ConfigError(f"unknown floating-point dtype '{name}'")
    return value


def load_network(
    folder: str | Path,
    config: OpenVLAConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = "auto",
) -> OpenVLANetwork:
    """Build the network on the meta device and assign the checkpoint's tensors to it (strict).

    No random initialisation runs and no weight is held twice, so a 7B checkpoint needs about its
    own size in memory. Non-persistent buffers (Llama's rotary frequencies) are rebuilt on ``device``.
    """
    folder = Path(folder)
    config = config or OpenVLAConfig.from_folder(folder)
    torch_dtype = resolve_dtype(dtype, config)
    network = build_network(config, "meta")
    expected = expected_checkpoint_shapes(network)
    tensors = read_checkpoint_tensors(folder, expected)
    state = {}
    for key in network.state_dict():
        tensor = tensors[checkpoint_name(key)]
        state[key] = tensor.to(device=device, dtype=torch_dtype if tensor.is_floating_point() else tensor.dtype)
    network.load_state_dict(state, strict=True, assign=True)
    _rebuild_rotary(network, device)
    leftover = [n for n, t in list(network.named_parameters()) + list(network.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"tensors left uninitialised after loading '{folder}': {_describe(leftover)}")
    return network.eval()


def _rebuild_rotary(network: OpenVLANetwork, device: str | torch.device) -> None:
    lm = network.language_model.model
    rotary = lm.rotary_emb
    lm.rotary_emb = type(rotary)(config=rotary.config, device=torch.device(device))


def count_parameters(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return int(sum(math.prod(s) for s in shapes.values()))
