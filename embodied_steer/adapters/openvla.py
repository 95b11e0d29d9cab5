"""OpenVLA as a :class:`SteerablePolicy`, loaded natively (no Prismatic remote code).

One call to :meth:`OpenVLAPolicy.act` does what OpenVLA's ``predict_action`` does: preprocess one
camera image (two normalisations, channel-stacked for the fused DINOv2 + SigLIP backbone),
tokenise ``"In: What action should the robot take to {instruction}?\\nOut:"`` (``<s>`` first,
the empty token ``"▁"`` last), insert the projected patch embeddings after ``<s>``, decode ``D``
tokens (``D`` = length of the dataset's ``q01``, 7 for the released checkpoints) with a KV cache,
map them to bin centres in ``[-1, 1]`` and un-normalise with the chosen dataset's ``q01`` / ``q99``
(dimensions whose ``mask`` is false — the gripper — pass through). The chunk holds one action.

Intervention points
-------------------
* ``ACTIVATIONS`` — :meth:`OpenVLAPolicy.modules`; :meth:`OpenVLAPolicy.module_schedule` says when
  each module fires during one chunk: ``"chunk"`` once; ``"token"`` once per decoded token (``D``
  times: first for the whole prompt — ``<s>``, the image patches, the text — then once per
  generated token with a sequence length of 1); ``"never"`` not during action decoding.
* ``SAMPLES`` — ``sample(obs, n)`` (and ``generate(n)`` with ``n > 1``) draw the action tokens with
  temperature ``sample_temperature`` from :attr:`generator`; ``act`` decodes greedily as OpenVLA
  does (unless ``temperature > 0``). The vision pass and the prompt prefix run once; the KV cache
  is repeated for the ``n`` samples.

Module names (``N`` = Llama depth, ``B`` = blocks of a vision tower; the tower names are
``dino`` / ``siglip`` from the timm ids)::

    vision                                   chunk   fused backbone, output (1, P, D_dino + D_siglip)
    vision.dino.blocks.{i}, .mlp             chunk   for i <= B - 2; the last block: never
    vision.siglip.blocks.{i}, .mlp           chunk   (the featurizer stops at the second-to-last block)
    projector                                chunk   output (1, P, hidden)
    llm.embed_tokens                         token   prompt ids (1, L) first, then (n, 1)
    llm.layers.{i}                           token
    llm.layers.{i}.self_attn.o_proj          token
    llm.layers.{i}.mlp, .mlp.down_proj       token   down_proj input = the MLP's neurons (intermediate_size)
    llm.norm, llm.lm_head                    token   lm_head sees the last position only

Chunk modules and the prompt pass see a batch of 1; the decoding passes see ``n``. In the prompt
pass, position 0 is ``<s>``, then come the image patches, then the text: :attr:`OpenVLAPolicy.prefix_layout`
holds the ranges (set before the pass runs, so hooks can read it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from embodied_steer.adapters.checkpoints import resolve_checkpoint
from embodied_steer.adapters.openvla_model import OpenVLAConfig, OpenVLANetwork, load_network, tower_kind
from embodied_steer.adapters.openvla_processing import (
    ActionBins,
    ImageTransform,
    PromptTokenizer,
    action_stats,
    libero_gripper,
    unnormalize,
)
from embodied_steer.core.errors import CheckpointError, ConfigError, ObservationError
from embodied_steer.core.policy import DenoiseCallback, InterventionPoint, PolicyInfo, SteerablePolicy
from embodied_steer.core.types import ActionBounds, Observation

Schedule = Literal["chunk", "token", "never"]
ImageFlip = Literal["none", "horizontal", "vertical", "both"]
GripperTransform = Literal["none", "libero"]
_FLIPS = {"none": (), "horizontal": (1,), "vertical": (0,), "both": (0, 1)}
#: Files fetched for a hub id (config, shards + index, tokenizer, preprocessor config).
HUB_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model")


@dataclass(frozen=True)
class DecodeRecord:
    """What the last call decoded (kept in :attr:`OpenVLAPolicy.last_decode`).

    Attributes:
        token_ids: ``(n, D)`` generated token ids.
        valid: ``(n, D)`` whether each id is an action token (others are clipped to an end bin).
        action_probs: ``(n, D, n_bins)`` softmax (temperature 1) of the logits of the ``n_bins``
            action tokens, in ascending token-id order (id ``first + j``; see ``ActionBins``).
        normalized: ``(n, D)`` bin centres in ``[-1, 1]``.
        temperature: 0 for greedy decoding.
    """

    token_ids: np.ndarray
    valid: np.ndarray
    action_probs: np.ndarray
    normalized: np.ndarray
    temperature: float


def merged_norm_stats(folder: Path, norm_stats: Mapping[str, object]) -> dict[str, object]:
    """``config.json``'s ``norm_stats`` updated with the folder's ``dataset_statistics.json`` (if any)."""
    merged = dict(norm_stats)
    path = folder / "dataset_statistics.json"
    if path.is_file():
        try:
            extra = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(extra, Mapping):
            raise CheckpointError(f"{path} must map dataset keys to statistics")
        merged.update(extra)
    return merged


@dataclass(frozen=True)
class PrefixLayout:
    """Positions in the prompt pass (the first ``"token"`` call): ``[start, stop)`` ranges.

    Position 0 is ``<s>``; then the image patches; then the prompt text (ending with ``"▁"``).
    """

    length: int
    image: tuple[int, int]
    text: tuple[int, int]


class OpenVLAPolicy(SteerablePolicy):
    """An OpenVLA checkpoint (Llama-2 + fused DINOv2/SigLIP) as a token-decoding policy.

    Args:
        network: the loaded :class:`OpenVLANetwork`.
        config: its :class:`OpenVLAConfig`.
        prompt_tokenizer: builds the prompt ids.
        image_transform: builds the pixel values.
        dataset_key: which ``norm_stats`` entry un-normalises actions (``None``: the only one).
        camera: which ``Observation.images`` entry to use (``None``: the only image).
        flip_images: flip the image before preprocessing (``"horizontal"`` on this project's
            LIBERO wrapper, whose images are row-flipped only, to match OpenVLA's 180° rotation).
        temperature: ``act()`` decoding temperature (0 = greedy, OpenVLA's default).
        sample_temperature: temperature of ``sample()`` / ``generate(n > 1)``.
        action_tokens_only: restrict decoding to the action tokens (OpenVLA does not: an
            out-of-range token is clipped to an end bin).
        center_crop_scale: crop the central fraction of the image *area* first (OpenVLA's
            evaluation of checkpoints fine-tuned with crop augmentation uses 0.9).
        gripper: ``"libero"`` applies OpenVLA's LIBERO gripper post-processing to the last dim.
        action_bounds: bounds of the environment's action space (``D`` dims).
        name, seed: as in :class:`SteerablePolicy`.
    """

    interventions = frozenset({InterventionPoint.ACTIVATIONS, InterventionPoint.SAMPLES})

    def __init__(
        self,
        network: OpenVLANetwork,
        config: OpenVLAConfig,
        prompt_tokenizer: PromptTokenizer,
        image_transform: ImageTransform,
        *,
        dataset_key: str | None = None,
        camera: str | None = None,
        flip_images: ImageFlip = "none",
        temperature: float = 0.0,
        sample_temperature: float = 1.0,
        action_tokens_only: bool = False,
        center_crop_scale: float | None = None,
        gripper: GripperTransform = "none",
        action_bounds: ActionBounds | None = None,
        name: str | None = None,
        seed: int = 0,
    ) -> None:
        if flip_images not in _FLIPS:
            raise ConfigError(f"flip_images must be one of {', '.join(_FLIPS)}, got '{flip_images}'")
        if gripper not in ("none", "libero"):
            raise ConfigError(f"gripper must be 'none' or 'libero', got '{gripper}'")
        for label, value in (("temperature", temperature), ("sample_temperature", sample_temperature)):
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"{label} must be a finite number >= 0, got {value}")
        if center_crop_scale is not None and not 0.0 < center_crop_scale <= 1.0:
            raise ConfigError(f"center_crop_scale must be in (0, 1], got {center_crop_scale}")
        self.network = network
        self.config = config
        self.prompt_tokenizer = prompt_tokenizer
        self.image_transform = image_transform
        self.dataset_key, self.stats = action_stats(config.norm_stats, dataset_key)
        self.bins = ActionBins(config.action_vocab_end, config.n_action_bins)
        vocab = int(config.text_config["vocab_size"])
        if self.bins.vocab_end > vocab:
            raise ConfigError(f"action vocabulary end {self.bins.vocab_end} exceeds the model vocabulary {vocab}")
        self.action_dim = int(self.stats["q01"].shape[0])
        if action_bounds is not None and action_bounds.dim != self.action_dim:
            raise ConfigError(f"action_bounds have {action_bounds.dim} dims but dataset '{self.dataset_key}' "
                              f"actions have {self.action_dim}")
        self.camera = camera
        self.flip_images = flip_images
        self.temperature = float(temperature)
        self.sample_temperature = float(sample_temperature)
        self.action_tokens_only = bool(action_tokens_only)
        self.center_crop_scale = center_crop_scale
        self.gripper = gripper
        self.last_decode: DecodeRecord | None = None
        self.prefix_layout: PrefixLayout | None = None
        """Set before the prompt pass runs, so hooks can tell image from text positions."""
        self._drawing = False
        super().__init__(
            PolicyInfo(
                name=name or "openvla",
                chunk_size=1,
                execute_steps=1,
                action_bounds=action_bounds,
                cameras=(camera,) if camera else (),
                uses_instruction=True,
                extra={
                    "dataset_key": self.dataset_key,
                    "available_dataset_keys": tuple(sorted(config.norm_stats)),
                    "action_token_range": self.bins.token_range,
                    "n_action_bins": self.bins.n_bins,
                    "vision_backbone_id": config.vision_backbone_id,
                    "llm_backbone_id": config.llm_backbone_id,
                },
            ),
            seed=seed,
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        *,
        dataset_key: str | None = None,
        device: str = "cpu",
        dtype: str | None = "auto",
        lowercase_instruction: bool = True,
        action_bounds: ActionBounds | Mapping[str, Sequence[float]] | None = None,
        revision: str | None = None,
        **kwargs,
    ) -> "OpenVLAPolicy":
        """Load an OpenVLA checkpoint folder (or hub id, e.g. ``openvla/openvla-7b``) natively.

        The folder needs ``config.json``, ``model.safetensors.index.json`` + shards (or one
        ``model.safetensors``) and ``tokenizer.json``; ``preprocessor_config.json`` is used when
        present, and so is ``dataset_statistics.json`` (what OpenVLA's fine-tuning script saves
        for the new dataset; its entries extend / replace ``config.json``'s ``norm_stats``).
        Nothing runs from the checkpoint's ``*.py`` files.

        Args:
            path_or_hub_id: local folder or hub repo id (needs a network or the HF cache).
            dataset_key: ``norm_stats`` entry for un-normalisation (e.g. ``"bridge_orig"``,
                ``"libero_spatial"``); required when the checkpoint has several.
            device: torch device. dtype: ``"auto"`` (the checkpoint's, bf16 for released ones),
                ``"float32"``, ``"bfloat16"`` …
            lowercase_instruction: lower-case the instruction as OpenVLA's evaluation scripts do.
            action_bounds: environment bounds, as :class:`ActionBounds` or ``{"low", "high"}``.
            revision: hub revision.
            kwargs: the remaining :meth:`__init__` options (camera, flip_images, temperature …).

        Raises:
            CheckpointError: missing folder / files, or weights that don't match the config.
            ConfigError: unsupported architecture or an unknown ``dataset_key`` (listing the keys).
        """
        folder = resolve_checkpoint(path_or_hub_id, revision, required=("config.json", "tokenizer.json"),
                                    allow_patterns=HUB_PATTERNS)
        config = OpenVLAConfig.from_folder(folder)
        config = dataclasses.replace(config, norm_stats=merged_norm_stats(folder, config.norm_stats))
        action_stats(config.norm_stats, dataset_key)  # fail on a bad key before loading gigabytes
        prompt = PromptTokenizer.from_folder(folder, bos_id=int(config.text_config.get("bos_token_id", 1)),
                                             lowercase=lowercase_instruction)
        transform = ImageTransform.for_checkpoint(folder, config.timm_model_ids, config.image_sizes,
                                                  config.image_resize_strategy)
        network = load_network(folder, config, device=device, dtype=dtype)
        if isinstance(action_bounds, Mapping):
            action_bounds = ActionBounds(np.asarray(list(action_bounds["low"]), np.float32),
                                         np.asarray(list(action_bounds["high"]), np.float32))
        kwargs.setdefault("name", Path(str(path_or_hub_id)).name or "openvla")
        return cls(network, config, prompt, transform, dataset_key=dataset_key, action_bounds=action_bounds, **kwargs)

    # ------------------------------------------------------------------ intervention points
    def _module_map(self) -> dict[str, tuple[nn.Module, Schedule]]:
        net = self.network
        out: dict[str, tuple[nn.Module, Schedule]] = {"vision": (net.vision_backbone, "chunk")}
        towers = net.vision_backbone.towers()
        kinds = [tower_kind(i) for i in self.config.timm_model_ids]
        for index, (tower, kind) in enumerate(zip(towers, kinds)):
            if kinds.count(kind) > 1:
                kind = f"{kind}{index}"
            depth = len(tower.blocks)
            for i, block in enumerate(tower.blocks):
                schedule: Schedule = "chunk" if i <= depth - 2 else "never"
                out[f"vision.{kind}.blocks.{i}"] = (block, schedule)
                out[f"vision.{kind}.blocks.{i}.mlp"] = (block.mlp, schedule)
        out["projector"] = (net.projector, "chunk")
        lm = net.language_model
        out["llm.embed_tokens"] = (lm.model.embed_tokens, "token")
        for i, layer in enumerate(lm.model.layers):
            out[f"llm.layers.{i}"] = (layer, "token")
            out[f"llm.layers.{i}.self_attn.o_proj"] = (layer.self_attn.o_proj, "token")
            out[f"llm.layers.{i}.mlp"] = (layer.mlp, "token")
            out[f"llm.layers.{i}.mlp.down_proj"] = (layer.mlp.down_proj, "token")
        out["llm.norm"] = (lm.model.norm, "token")
        out["llm.lm_head"] = (lm.lm_head, "token")
        return out

    def modules(self) -> dict[str, nn.Module]:
        """Named modules for forward hooks; see the module docstring for names and schedules."""
        return {name: module for name, (module, _) in self._module_map().items()}

    def module_schedule(self) -> dict[str, Schedule]:
        """Name → ``"chunk"`` (once per chunk), ``"token"`` (once per decoded token, ``D`` times per
        chunk) or ``"never"`` (not run while decoding actions)."""
        return {name: schedule for name, (_, schedule) in self._module_map().items()}

    def sample(self, obs: Observation, n: int, *, noise: torch.Tensor | None = None):
        """``n`` actions drawn with ``sample_temperature`` (``(n, 1, D)``); see :class:`SteerablePolicy`."""
        with self._sampling():
            return super().sample(obs, n, noise=noise)

    @contextlib.contextmanager
    def _sampling(self) -> Iterator[None]:
        previous, self._drawing = self._drawing, True
        try:
            yield
        finally:
            self._drawing = previous

    # ------------------------------------------------------------------ inputs
    def select_image(self, obs: Observation) -> np.ndarray:
        """The camera image OpenVLA reads, flipped as configured."""
        if not obs.images:
            raise ObservationError("OpenVLA needs a camera image, but the observation has none")
        if self.camera is None:
            if len(obs.images) != 1:
                raise ObservationError(f"observation has {len(obs.images)} images ({', '.join(obs.images)}); "
                                       "set camera= to choose the one OpenVLA reads")
            image = next(iter(obs.images.values()))
        elif self.camera not in obs.images:
            raise ObservationError(f"camera '{self.camera}' is not in the observation; it has: "
                                   + ", ".join(obs.images))
        else:
            image = obs.images[self.camera]
        axes = _FLIPS[self.flip_images]
        return np.ascontiguousarray(np.flip(image, axes)) if axes else image

    def preprocess(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """Observation → ``pixel_values (1, 3 * towers, S, S)`` and prompt ``input_ids (1, L)``."""
        ids = self.prompt_tokenizer(obs.instruction)
        pixels = self.image_transform(self.select_image(obs), self.center_crop_scale)
        return pixels.unsqueeze(0), ids.unsqueeze(0)

    # ------------------------------------------------------------------ decoding
    @property
    def _device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    def decode_tokens(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids ``(..., D)`` → actions in dataset units ``(..., D)`` (+ gripper transform)."""
        actions = unnormalize(self.bins.decode(token_ids), self.stats)
        if self.gripper == "libero":
            actions = libero_gripper(actions)
        return actions

    @torch.no_grad()
    def _generate(
        self,
        history: Sequence[Observation],
        n: int,
        noise: torch.Tensor | None,
        denoise_callback: DenoiseCallback | None,
    ) -> np.ndarray:
        pixels, ids = self.preprocess(history[-1])
        temperature = self.sample_temperature if (self._drawing or n > 1) else self.temperature
        lm = self.network.language_model
        device = self._device
        patches = self.network.image_tokens(pixels.to(device=device, dtype=self._dtype))
        embeds = lm.model.embed_tokens(ids.to(device))
        prefix = torch.cat([embeds[:, :1], patches.to(embeds.dtype), embeds[:, 1:]], dim=1)
        num_patches = patches.shape[1]
        self.prefix_layout = PrefixLayout(length=prefix.shape[1], image=(1, 1 + num_patches),
                                          text=(1 + num_patches, prefix.shape[1]))
        out = lm(inputs_embeds=prefix, use_cache=True, logits_to_keep=1)
        cache, logits = out.past_key_values, out.logits[:, -1].float()
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.expand(n, -1)
        first, last = self.bins.token_range
        tokens, probs = [], []
        for d in range(self.action_dim):
            probs.append(torch.softmax(logits[:, first:last + 1], dim=-1).cpu())
            token = self._select(logits, temperature, first, last)
            tokens.append(token)
            if d + 1 < self.action_dim:
                out = lm(input_ids=token[:, None].to(device), past_key_values=cache, use_cache=True)
                cache, logits = out.past_key_values, out.logits[:, -1].float()
        token_ids = torch.stack(tokens, dim=1).cpu().numpy()
        self.last_decode = DecodeRecord(
            token_ids=token_ids,
            valid=self.bins.is_action_token(token_ids),
            action_probs=torch.stack(probs, dim=1).numpy(),
            normalized=self.bins.decode(token_ids),
            temperature=temperature,
        )
        return self.decode_tokens(token_ids)[:, None, :]

    def _select(self, logits: torch.Tensor, temperature: float, first: int, last: int) -> torch.Tensor:
        """``(n, V)`` logits → ``(n,)`` token ids: argmax at temperature 0, else a categorical draw."""
        if self.action_tokens_only:
            masked = torch.full_like(logits, float("-inf"))
            masked[:, first:last + 1] = logits[:, first:last + 1]
            logits = masked
        if temperature == 0.0:
            return logits.argmax(dim=-1).cpu()
        weights = torch.softmax(logits / temperature, dim=-1).cpu()
        return torch.multinomial(weights, 1, generator=self.generator)[:, 0]

    def with_options(self, **changes) -> "OpenVLAPolicy":
        """A policy sharing this one's network with some :meth:`__init__` options changed."""
        options = dict(
            dataset_key=self.dataset_key, camera=self.camera, flip_images=self.flip_images,
            temperature=self.temperature, sample_temperature=self.sample_temperature,
            action_tokens_only=self.action_tokens_only, center_crop_scale=self.center_crop_scale,
            gripper=self.gripper, action_bounds=self.info.action_bounds, name=self.info.name,
        )
        unknown = set(changes) - set(options) - {"seed"}
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        options.update(changes)
        return type(self)(self.network, self.config, self.prompt_tokenizer, self.image_transform, **options)


__all__ = ["DecodeRecord", "OpenVLAPolicy", "PrefixLayout", "merged_norm_stats"]
