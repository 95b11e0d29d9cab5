"""LeRobot's flow-matching VLAs — PI0, PI05 and SmolVLA — as a :class:`SteerablePolicy`.

All three share one sampler: a VLM encodes the images, instruction (and, except PI05, state) into
a KV cache once per chunk ("prefix"), then an action expert integrates a velocity field with
forward Euler from noise at flow time ``t = 1`` to actions at ``t = 0`` (``dt = -1/num_steps``)::

    x_t = t * noise + (1 - t) * actions        v = noise - actions        x <- x + dt * v

This adapter runs that Euler loop itself around LeRobot's per-step velocity function
(``model.denoise_step``), which is what gives the ``DENOISING_STEP`` intervention point; without a
callback it reproduces ``policy.predict_action_chunk(batch, noise=...)`` to float precision. The
prefix is computed once for a batch of one and its KV cache repeated for the ``n`` particles, so
``sample(obs, n)`` costs one VLM pass plus ``n``-wide expert passes.

Intervention points
-------------------
* ``NOISE`` — ``noise_spec.shape == (chunk_size, max_action_dim)`` (e.g. ``(50, 32)`` for released
  PI0 checkpoints); only the first ``action_dim`` entries of the last axis become actions.
* ``SAMPLES`` — ``n`` chunks for one observation.
* ``DENOISING_STEP`` — :class:`DenoiseStep` with ``prediction="velocity"``, ``t`` in LeRobot's
  convention (1 = noise … 0 = data, first step ``t = 1``), ``x0 = x - t * v`` and
  ``to_actions`` = differentiable slice to the action dims + LeRobot's unnormaliser. A callback
  that subtracts ``c`` from the velocity moves the final sample by ``+c`` (``dt < 0``).
* ``ACTIVATIONS`` — :meth:`LeRobotFlowPolicy.modules` (names below); :meth:`module_schedule` says
  when each fires during one chunk: ``"chunk"`` once (vision modules: once per camera), ``"step"``
  once per flow step, ``"never"`` not during action sampling.

Module names (``N`` = VLM depth, ``M`` = expert depth)::

    vision, vision.projector                      chunk (once per camera)
    vlm.embed_tokens                              chunk
    vlm.layers.{i}                                chunk in PI0/PI05; never in SmolVLA (its layers are
                                                  run piecewise, so decoder-layer hooks do not fire)
    vlm.layers.{i}.self_attn.o_proj               chunk
    vlm.layers.{i}.mlp, vlm.layers.{i}.mlp.down_proj   chunk
    vlm.norm                                      chunk
    vlm.lm_head                                   never (the unembedding, for reading directions)
    expert.layers.{j}                             step in PI0/PI05; never in SmolVLA
    expert.layers.{j}.self_attn.o_proj            step
    expert.layers.{j}.mlp, expert.layers.{j}.mlp.down_proj   step
    expert.norm                                   step
    action_in_proj, action_out_proj               step
    action_time_mlp_in/out (PI0, SmolVLA), time_mlp_in/out (PI05)   step
    state_proj                                    step in PI0 (state is an expert token), chunk in SmolVLA

Prefix modules see a batch of 1 (shared by all particles); expert modules see ``n``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import shutil
import types
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from embodied_steer.adapters.checkpoints import resolve_checkpoint
from embodied_steer.adapters.lerobot_batch import OBS_IMAGES_PREFIX, observation_to_frame
from embodied_steer.core.errors import CheckpointError, ConfigError
from embodied_steer.core.policy import (
    DenoiseCallback,
    DenoiseStep,
    InterventionPoint,
    NoiseSpec,
    PolicyInfo,
    SteerablePolicy,
    StepEdit,
)
from embodied_steer.core.types import ActionBounds, Observation
from embodied_steer.core.steps import denoise_step_context

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("pi0", "pi05", "smolvla")
#: The tokenizer LeRobot's PI0/PI05 processors name (gated on the hub; pass ``tokenizer_path``).
PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"
#: Our own sidecar in saved checkpoints: adapter settings and, for tiny models, their sizes.
SIDECAR = "embodied_steer.json"
_EMPTY_CAMERA_PREFIX = OBS_IMAGES_PREFIX + "empty_camera_"

Schedule = Literal["chunk", "step", "never"]
ImageFlip = Literal["none", "horizontal", "vertical", "both"]
_FLIPS = {"none": (), "horizontal": (1,), "vertical": (0,), "both": (0, 1)}
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# =========================================================================== per-architecture glue
class _Backend:
    """What differs between PI0, PI05 and SmolVLA: prefix encoding, step count, module names."""

    def __init__(self, policy: nn.Module) -> None:
        self.policy = policy
        self.config = policy.config
        self.model = policy.model

    @property
    def num_steps(self) -> int:
        return int(self.config.num_inference_steps)

    @num_steps.setter
    def num_steps(self, value: int) -> None:
        self.config.num_inference_steps = int(value)

    def encode(self, batch: dict[str, Any], n: int) -> VelocityFn:
        """Run the VLM prefix on a batch of one; return ``v(x_t (n,T,D), t (n,)) -> (n,T,D)``."""
        raise NotImplementedError

    def model_actions(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, T, max_action_dim)`` sampler output → ``(K, T, action_dim)`` policy actions (normalised)."""
        return x[..., : self.config.output_features["action"].shape[0]]

    def module_map(self) -> dict[str, tuple[nn.Module, Schedule]]:
        raise NotImplementedError


def _repeat_prefix(cache: Any, masks: torch.Tensor, n: int) -> torch.Tensor:
    if n > 1:
        cache.batch_repeat_interleave(n)
        masks = masks.repeat_interleave(n, dim=0)
    return masks


def _layer_entries(prefix: str, layers: Sequence[nn.Module], decoder_schedule: Schedule, schedule: Schedule):
    out: dict[str, tuple[nn.Module, Schedule]] = {}
    for i, layer in enumerate(layers):
        out[f"{prefix}.layers.{i}"] = (layer, decoder_schedule)
        out[f"{prefix}.layers.{i}.self_attn.o_proj"] = (layer.self_attn.o_proj, schedule)
        out[f"{prefix}.layers.{i}.mlp"] = (layer.mlp, schedule)
        out[f"{prefix}.layers.{i}.mlp.down_proj"] = (layer.mlp.down_proj, schedule)
    return out


def _projections(model: nn.Module, state_schedule: Schedule) -> dict[str, tuple[nn.Module, Schedule]]:
    out: dict[str, tuple[nn.Module, Schedule]] = {}
    for name in ("action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out",
                 "time_mlp_in", "time_mlp_out"):
        if isinstance(getattr(model, name, None), nn.Module):
            out[name] = (getattr(model, name), "step")
    if isinstance(getattr(model, "state_proj", None), nn.Module):
        out["state_proj"] = (model.state_proj, state_schedule)
    return out


class _PaliGemmaBackend(_Backend):
    """PI0 and PI05: PaliGemma prefix, Gemma expert reading its KV cache."""

    def encode(self, batch: dict[str, Any], n: int) -> VelocityFn:
        from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        policy, model = self.policy, self.model
        images, img_masks = policy._preprocess_images(batch)  # noqa: SLF001 - LeRobot's own image prep
        tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        embs, pad_masks, att_masks = model.embed_prefix(images, img_masks, tokens, masks)
        att_4d = prepare_attention_masks_4d(make_att_2d_masks(pad_masks, att_masks))
        position_ids = torch.cumsum(pad_masks, dim=1) - 1
        # LeRobot's sample_actions sets the same before the prefix pass.
        model.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"  # noqa: SLF001
        _, cache = model.paligemma_with_expert.forward(
            attention_mask=att_4d,
            position_ids=position_ids,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=True,
        )
        pad_masks = _repeat_prefix(cache, pad_masks, n)
        if self.config.type == "pi05":
            return lambda x, t: model.denoise_step(
                prefix_pad_masks=pad_masks, past_key_values=cache, x_t=x, timestep=t
            )
        state = policy.prepare_state(batch).repeat_interleave(n, dim=0)
        return lambda x, t: model.denoise_step(
            state=state, prefix_pad_masks=pad_masks, past_key_values=cache, x_t=x, timestep=t
        )

    def module_map(self) -> dict[str, tuple[nn.Module, Schedule]]:
        pwe = self.model.paligemma_with_expert
        vlm = pwe.paligemma.model
        expert = pwe.gemma_expert.model
        out: dict[str, tuple[nn.Module, Schedule]] = {
            "vision": (vlm.vision_tower, "chunk"),
            "vision.projector": (vlm.multi_modal_projector, "chunk"),
            "vlm.embed_tokens": (vlm.language_model.embed_tokens, "chunk"),
            "vlm.lm_head": (pwe.paligemma.lm_head, "never"),
            "vlm.norm": (vlm.language_model.norm, "chunk"),
            "expert.norm": (expert.norm, "step"),
        }
        out.update(_layer_entries("vlm", vlm.language_model.layers, "chunk", "chunk"))
        out.update(_layer_entries("expert", expert.layers, "step", "step"))
        out.update(_projections(self.model, "step"))
        return out


class _SmolVLABackend(_Backend):
    """SmolVLA: SmolVLM prefix (images, language, state), Llama expert cross-attending to it."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__(policy)
        if not self.config.use_cache:
            raise ConfigError("SmolVLA with use_cache=False is not supported: the expert reads the prefix from the KV cache")

    @property
    def num_steps(self) -> int:
        return int(self.config.num_steps)

    @num_steps.setter
    def num_steps(self, value: int) -> None:
        self.config.num_steps = int(value)

    def encode(self, batch: dict[str, Any], n: int) -> VelocityFn:
        from lerobot.policies.common.vla_utils import make_att_2d_masks
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        policy, model = self.policy, self.model
        batch = policy._prepare_batch(dict(batch))  # noqa: SLF001 - Aloha state conversion when configured
        images, img_masks = policy.prepare_images(batch)
        state = policy.prepare_state(batch)
        tokens, masks = batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK]
        embs, pad_masks, att_masks = model.embed_prefix(images, img_masks, tokens, masks, state=state)
        position_ids = torch.cumsum(pad_masks, dim=1) - 1
        _, cache = model.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(pad_masks, att_masks),
            position_ids=position_ids,
            past_key_values=None,
            inputs_embeds=[embs, None],
            use_cache=True,
        )
        pad_masks = _repeat_prefix(cache, pad_masks, n)
        return lambda x, t: model.denoise_step(
            prefix_pad_masks=pad_masks, past_key_values=cache, x_t=x, timestep=t
        )

    def model_actions(self, x: torch.Tensor) -> torch.Tensor:
        actions = super().model_actions(x)
        if self.config.adapt_to_pi_aloha:
            actions = self.policy._pi_aloha_encode_actions(actions.clone())  # noqa: SLF001 - in-place op
        return actions

    def module_map(self) -> dict[str, tuple[nn.Module, Schedule]]:
        vwe = self.model.vlm_with_expert
        vlm = vwe.vlm.model
        out: dict[str, tuple[nn.Module, Schedule]] = {
            "vision": (vlm.vision_model, "chunk"),
            "vision.projector": (vlm.connector, "chunk"),
            "vlm.embed_tokens": (vlm.text_model.embed_tokens, "chunk"),
            "vlm.lm_head": (vwe.vlm.lm_head, "never"),
            "vlm.norm": (vlm.text_model.norm, "chunk"),
            "expert.norm": (vwe.lm_expert.norm, "step"),
        }
        # SmolVLMWithExpertModel calls layer.input_layernorm / self_attn.*_proj / mlp directly, so
        # the decoder layers' own forward (and its hooks) never runs.
        out.update(_layer_entries("vlm", vlm.text_model.layers, "never", "chunk"))
        out.update(_layer_entries("expert", vwe.lm_expert.layers, "never", "step"))
        out.update(_projections(self.model, "chunk"))
        return out


def _backend_for(policy: nn.Module) -> _Backend:
    kind = policy.config.type
    if kind in ("pi0", "pi05"):
        return _PaliGemmaBackend(policy)
    if kind == "smolvla":
        return _SmolVLABackend(policy)
    raise ConfigError(f"unsupported policy type '{kind}': LeRobotFlowPolicy handles {', '.join(SUPPORTED_TYPES)}")


def _policy_class(policy_type: str) -> type:
    if policy_type == "pi0":
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy

        return PI0Policy
    if policy_type == "pi05":
        from lerobot.policies.pi05.modeling_pi05 import PI05Policy

        return PI05Policy
    if policy_type == "smolvla":
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

        return SmolVLAPolicy
    raise ConfigError(
        f"unsupported policy type '{policy_type}': LeRobotFlowPolicy handles {', '.join(SUPPORTED_TYPES)} "
        "(DiffusionPolicy has its own adapter)"
    )


# =========================================================================== processors
def make_processors(
    config: Any,
    dataset_stats: Mapping[str, Mapping[str, torch.Tensor]] | None,
    tokenizer_name: str,
) -> tuple[Any, Any]:
    """Build fresh LeRobot pre/post-processor pipelines for ``config`` with a given tokenizer.

    SmolVLA goes through LeRobot's own factory (its tokenizer is ``config.vlm_model_name``). The
    PI0 / PI05 factories hard-code the gated ``google/paligemma-3b-pt-224`` tokenizer, which cannot
    be loaded offline, so their step lists are assembled here from LeRobot's step classes, in the
    factories' order (a test checks the two agree).
    """
    from lerobot.processor import (
        AbsoluteActionsProcessorStep,
        RelativeActionsProcessorStep,
        TokenizerProcessorStep,
        make_default_policy_processor_steps,
        make_policy_processor_pipelines,
    )

    stats = {k: dict(v) for k, v in dataset_stats.items()} if dataset_stats else None
    if config.type == "smolvla":
        from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

        if tokenizer_name != config.vlm_model_name:
            raise ConfigError("SmolVLA's tokenizer is its VLM's: set config.vlm_model_name instead of tokenizer_path")
        with _tokenizer_errors(tokenizer_name):
            return make_smolvla_pre_post_processors(config, stats)

    steps = make_default_policy_processor_steps(config, stats)
    relative = RelativeActionsProcessorStep(
        enabled=config.use_relative_actions,
        exclude_joints=getattr(config, "relative_exclude_joints", []),
        action_names=getattr(config, "action_feature_names", None),
    )
    with _tokenizer_errors(tokenizer_name):
        tokenize = TokenizerProcessorStep(
            tokenizer_name=str(tokenizer_name),
            max_length=config.tokenizer_max_length,
            padding_side="right",
            padding="max_length",
        )
    if config.type == "pi0":
        from lerobot.policies.pi0.processor_pi0 import Pi0NewLineProcessor

        input_steps = [steps.rename_observations, steps.add_batch_dim, Pi0NewLineProcessor(), tokenize,
                       steps.to_device, relative, steps.normalize]
    else:
        from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep

        input_steps = [steps.rename_observations, steps.add_batch_dim, relative, steps.normalize,
                       Pi05PrepareStateTokenizerProcessorStep(max_state_dim=config.max_state_dim), tokenize,
                       steps.to_device]
    output_steps = [
        steps.unnormalize,
        AbsoluteActionsProcessorStep(enabled=config.use_relative_actions, relative_step=relative),
        steps.to_cpu,
    ]
    return make_policy_processor_pipelines(input_steps=input_steps, output_steps=output_steps)


@contextlib.contextmanager
def _tokenizer_errors(tokenizer_name: str | None):
    """Turn transformers' failure to find a tokenizer into a CheckpointError that says what to pass."""
    from huggingface_hub.errors import HFValidationError  # a missing local path is "not a repo id"

    try:
        yield
    except (OSError, HFValidationError) as err:
        raise CheckpointError(
            f"cannot load tokenizer '{tokenizer_name}' ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "offline, pass tokenizer_path= (PI0/PI05) or vlm_path= (SmolVLA) pointing at a local folder"
        ) from err


def _load_processors(folder: Path, config: Any, device: str, tokenizer_name: str | None) -> tuple[Any, Any]:
    """Load the checkpoint's saved pipelines (with their normalisation stats) via LeRobot's factory."""
    from lerobot.policies.factory import make_pre_post_processors

    pre_file = folder / "policy_preprocessor.json"
    saved_steps = {step.get("registry_name") for step in json.loads(pre_file.read_text()).get("steps", [])}
    overrides: dict[str, dict[str, Any]] = {}
    if "device_processor" in saved_steps:
        overrides["device_processor"] = {"device": device}
    if tokenizer_name is not None and "tokenizer_processor" in saved_steps:
        overrides["tokenizer_processor"] = {"tokenizer_name": str(tokenizer_name)}
    with _tokenizer_errors(overrides.get("tokenizer_processor", {}).get("tokenizer_name", "named in the checkpoint")):
        return make_pre_post_processors(config, pretrained_path=str(folder), preprocessor_overrides=overrides)


# =========================================================================== the adapter
class LeRobotFlowPolicy(SteerablePolicy):
    """A LeRobot PI0 / PI05 / SmolVLA policy with all four intervention points.

    Build it with :meth:`from_pretrained` (a checkpoint folder or hub id) or :meth:`from_config`
    (random init); :mod:`embodied_steer.adapters.tiny` makes tiny ones for tests.

    Actions come out in environment units: LeRobot's post-processor unnormalises them and they are
    sliced to ``action_bounds.dim`` when bounds are given (else the policy's action dim).
    """

    interventions = frozenset(InterventionPoint)

    def __init__(
        self,
        policy: nn.Module,
        preprocessor: Any,
        postprocessor: Any,
        *,
        camera_map: Mapping[str, str] | None = None,
        flip_images: ImageFlip = "none",
        execute_steps: int | None = None,
        action_bounds: ActionBounds | None = None,
        num_steps: int | None = None,
        name: str | None = None,
        assets: Mapping[str, Any] | None = None,
    ) -> None:
        """Wrap an already-built LeRobot policy and its processors.

        Args:
            policy: a ``PI0Policy``, ``PI05Policy`` or ``SmolVLAPolicy``.
            preprocessor / postprocessor: its LeRobot processor pipelines.
            camera_map: policy image key (``"observation.images.image"``) → observation camera.
            flip_images: flip every camera image before the policy sees it: ``"horizontal"``
                (columns), ``"vertical"`` (rows) or ``"both"`` (a 180° rotation). LeRobot's LIBERO
                checkpoints were trained on 180°-rotated renders, i.e. ``"horizontal"`` of an
                environment that already flips rows so that row 0 is the top.
            execute_steps: actions executed per chunk (default: the config's ``n_action_steps``).
            action_bounds: the environment's action box; its dim slices the policy's actions.
            num_steps: override the number of flow steps (default: the config's).
            name: a display name.
            assets: internal — what :meth:`save_pretrained` must copy (tokenizer / VLM folder,
                tiny architecture).
        """
        self._backend = _backend_for(policy)
        self.policy = policy.eval()
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.camera_map = dict(camera_map or {})
        if flip_images not in _FLIPS:
            raise ConfigError(f"flip_images must be one of {sorted(_FLIPS)}, got {flip_images!r}")
        self.flip_images = flip_images
        self._assets = dict(assets or {})
        config = policy.config
        if num_steps is not None:
            if num_steps < 1:
                raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
            self._backend.num_steps = num_steps
        self._input_features = {
            k: v for k, v in config.input_features.items() if not k.startswith(_EMPTY_CAMERA_PREFIX)
        }
        # The VLAs resize (with padding) whatever image size they get, so only the state is size-checked.
        self._frame_features = {
            k: types.SimpleNamespace(shape=()) if k.startswith(OBS_IMAGES_PREFIX) else v
            for k, v in self._input_features.items()
        }
        self.action_dim = int(config.output_features["action"].shape[0])
        if action_bounds is not None and action_bounds.dim > self.action_dim:
            raise ConfigError(
                f"action_bounds have {action_bounds.dim} dims but policy '{name or config.type}' "
                f"outputs {self.action_dim}"
            )
        self._env_action_dim = action_bounds.dim if action_bounds is not None else self.action_dim
        execute = int(execute_steps if execute_steps is not None else config.n_action_steps)
        if not 1 <= execute <= config.chunk_size:
            raise ConfigError(f"execute_steps must be in [1, {config.chunk_size}], got {execute}")
        image_keys = [k for k in self._input_features if k.startswith(OBS_IMAGES_PREFIX)]
        state = self._input_features.get("observation.state")
        super().__init__(
            PolicyInfo(
                name=name or config.type,
                chunk_size=int(config.chunk_size),
                execute_steps=execute,
                action_bounds=action_bounds,
                state_dim=int(state.shape[0]) if state is not None else None,
                cameras=tuple(self.camera_map.get(k, k.removeprefix(OBS_IMAGES_PREFIX)) for k in image_keys),
                uses_instruction=True,
                extra={
                    "policy_type": config.type,
                    "num_steps": self._backend.num_steps,
                    "max_action_dim": int(config.max_action_dim),
                    "image_keys": tuple(image_keys),
                },
            )
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        config: Any,
        dataset_stats: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        *,
        tokenizer_path: str | Path | None = None,
        device: str = "cpu",
        camera_map: Mapping[str, str] | None = None,
        flip_images: ImageFlip = "none",
        execute_steps: int | None = None,
        action_bounds: ActionBounds | None = None,
        num_steps: int | None = None,
        name: str | None = None,
        tiny: Any | None = None,
    ) -> "LeRobotFlowPolicy":
        """A randomly initialised policy from a LeRobot config (``PI0Config`` / ``PI05Config`` / ``SmolVLAConfig``).

        Args:
            config: the policy config, with ``input_features`` / ``output_features`` set.
            dataset_stats: feature name → ``{"mean", "std", ...}`` tensors for (un)normalisation
                (PI05 normalises with ``q01`` / ``q99``).
            tokenizer_path: PI0 / PI05: a local tokenizer folder (default: the hub's
                ``google/paligemma-3b-pt-224``). SmolVLA uses ``config.vlm_model_name``.
            tiny: a :class:`~embodied_steer.adapters.tiny.TinyArchitecture` to build a reduced
                PI0 / PI05 (see that module).
            Others: as in :meth:`__init__`.
        """
        _policy_class(config.type)  # fail early with a clear message for other policy types
        config.device = device
        tokenizer_name = cls._tokenizer_name(config, tokenizer_path)
        pre, post = make_processors(config, dataset_stats, tokenizer_name)
        with cls._architecture(config.type, tiny):
            policy = _policy_class(config.type)(config)
        policy.to(device)
        assets = {"tokenizer": tokenizer_path, "tiny": tiny}
        return cls(policy, pre, post, camera_map=camera_map, flip_images=flip_images, execute_steps=execute_steps,
                   action_bounds=action_bounds, num_steps=num_steps, name=name, assets=assets)

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        *,
        tokenizer_path: str | Path | None = None,
        vlm_path: str | Path | None = None,
        device: str = "cpu",
        camera_map: Mapping[str, str] | None = None,
        flip_images: ImageFlip | None = None,
        execute_steps: int | None = None,
        action_bounds: ActionBounds | Mapping[str, Sequence[float]] | None = None,
        num_steps: int | None = None,
        revision: str | None = None,
        name: str | None = None,
    ) -> "LeRobotFlowPolicy":
        """Load a LeRobot checkpoint the way LeRobot does: ``<Policy>.from_pretrained`` plus the saved
        processor pipelines (with their normalisation stats) through ``make_pre_post_processors``.

        Args:
            path_or_hub_id: a local checkpoint folder (``config.json``, ``model.safetensors``,
                ``policy_preprocessor.json`` …) or a hub repo id such as ``lerobot/pi0_libero_finetuned``
                (needs a hub connection, or the repo in the local HF cache).
            tokenizer_path: local tokenizer folder replacing the one the checkpoint names (PI0 / PI05
                name the gated ``google/paligemma-3b-pt-224``). Default: the checkpoint's
                ``tokenizer/`` subfolder if present.
            vlm_path: SmolVLA: local folder with the VLM config + processor replacing
                ``vlm_model_name`` (default: the checkpoint's ``vlm/`` subfolder if present). The
                VLM's weights come from the checkpoint, so they are never downloaded separately.
            device: torch device for the model.
            camera_map, flip_images, execute_steps, action_bounds, num_steps, name: as in :meth:`__init__`;
                defaults come from the checkpoint's ``embodied_steer.json`` when it has one.
            revision: hub revision.

        Raises:
            CheckpointError: the folder does not exist or lacks files, or the hub id can't be fetched.
            ConfigError: the checkpoint is not a PI0 / PI05 / SmolVLA policy.
        """
        from lerobot.configs import PreTrainedConfig

        folder = resolve_checkpoint(path_or_hub_id, revision)
        sidecar = json.loads((folder / SIDECAR).read_text()) if (folder / SIDECAR).is_file() else {}
        try:
            config = PreTrainedConfig.from_pretrained(str(folder))
        except Exception as err:  # draccus raises several types for unknown / malformed configs
            raise ConfigError(f"checkpoint '{path_or_hub_id}': cannot read config.json ({err})") from err
        policy_cls = _policy_class(config.type)
        config.device = device
        if config.type == "smolvla":
            vlm = vlm_path or (folder / "vlm" if (folder / "vlm").is_dir() else None)
            if vlm is not None:
                config.vlm_model_name = str(vlm)
            # The checkpoint holds all VLM weights; loading them from vlm_model_name first would
            # download ~1 GB only to overwrite it.
            config.load_vlm_weights = False
        if tokenizer_path is None and (folder / "tokenizer").is_dir():
            tokenizer_path = folder / "tokenizer"
        tiny = sidecar.get("tiny_architecture")
        if tiny is not None:
            from embodied_steer.adapters.tiny import TinyArchitecture

            tiny = TinyArchitecture.from_dict(tiny)
        with cls._architecture(config.type, tiny):
            policy = _load_weights(policy_cls, folder, config)
        policy.to(device)

        tokenizer_name = cls._tokenizer_name(config, tokenizer_path)
        if (folder / "policy_preprocessor.json").is_file():
            # PI0/PI05 keep the tokenizer their saved pipeline names unless one is given;
            # SmolVLA's must follow vlm_model_name, which may just have been redirected.
            keep_saved = tokenizer_path is None and config.type != "smolvla"
            pre, post = _load_processors(folder, config, device, None if keep_saved else tokenizer_name)
        else:
            log.warning("checkpoint %s has no saved processors: actions are not unnormalised", folder)
            pre, post = make_processors(config, None, tokenizer_name)

        if action_bounds is None and sidecar.get("action_bounds"):
            action_bounds = sidecar["action_bounds"]
        if isinstance(action_bounds, Mapping):
            action_bounds = ActionBounds(
                np.asarray(list(action_bounds["low"]), dtype=np.float32),
                np.asarray(list(action_bounds["high"]), dtype=np.float32),
            )
        return cls(
            policy,
            pre,
            post,
            camera_map=camera_map if camera_map is not None else sidecar.get("camera_map"),
            flip_images=flip_images if flip_images is not None else sidecar.get("flip_images", "none"),
            execute_steps=execute_steps if execute_steps is not None else sidecar.get("execute_steps"),
            action_bounds=action_bounds,
            num_steps=num_steps,
            name=name or str(path_or_hub_id),
            assets={"tokenizer": tokenizer_path, "tiny": tiny},
        )

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write a checkpoint :meth:`from_pretrained` (and LeRobot) can load.

        Contents: LeRobot's ``config.json`` + ``model.safetensors``, the processor pipelines with
        their stats, ``tokenizer/`` (PI0 / PI05 with a local tokenizer) or ``vlm/`` (SmolVLA with a
        local VLM folder), and ``embodied_steer.json`` (camera map, execute steps, bounds, tiny sizes).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(folder)
        self.preprocessor.save_pretrained(folder)
        self.postprocessor.save_pretrained(folder)
        tokenizer = self._assets.get("tokenizer")
        if tokenizer is not None and Path(tokenizer).is_dir() and Path(tokenizer).resolve() != (folder / "tokenizer").resolve():
            shutil.copytree(tokenizer, folder / "tokenizer", dirs_exist_ok=True)
        config = self.policy.config
        if config.type == "smolvla" and Path(config.vlm_model_name).is_dir():
            if Path(config.vlm_model_name).resolve() != (folder / "vlm").resolve():
                shutil.copytree(config.vlm_model_name, folder / "vlm", dirs_exist_ok=True)
        tiny = self._assets.get("tiny")
        bounds = self.info.action_bounds
        sidecar = {
            "camera_map": self.camera_map,
            "flip_images": self.flip_images,
            "execute_steps": self.info.execute_steps,
            "action_bounds": None if bounds is None else {"low": bounds.low.tolist(), "high": bounds.high.tolist()},
            "tiny_architecture": None if tiny is None else tiny.to_dict(),
        }
        (folder / SIDECAR).write_text(json.dumps(sidecar, indent=2))
        return folder

    @staticmethod
    def _tokenizer_name(config: Any, tokenizer_path: str | Path | None) -> str:
        if config.type == "smolvla":
            return str(config.vlm_model_name)
        return str(tokenizer_path) if tokenizer_path is not None else PALIGEMMA_TOKENIZER

    @staticmethod
    def _architecture(policy_type: str, tiny: Any | None) -> contextlib.AbstractContextManager:
        if tiny is None:
            return contextlib.nullcontext()
        from embodied_steer.adapters.tiny import tiny_architecture

        return tiny_architecture(policy_type, tiny)

    # ------------------------------------------------------------------ intervention points
    @property
    def noise_spec(self) -> NoiseSpec:
        config = self.policy.config
        return NoiseSpec(shape=(int(config.chunk_size), int(config.max_action_dim)), action_dims=self.action_dim)

    @property
    def num_steps(self) -> int:
        """Number of Euler flow steps per chunk."""
        return self._backend.num_steps

    def modules(self) -> dict[str, nn.Module]:
        """Named modules for forward hooks; see the module docstring for names and when they fire."""
        return {name: module for name, (module, _) in self._backend.module_map().items()}

    def module_schedule(self) -> dict[str, Schedule]:
        """Name → ``"chunk"`` (fires once per chunk; vision modules once per camera), ``"step"``
        (once per flow step) or ``"never"`` (not during action sampling)."""
        return {name: schedule for name, (_, schedule) in self._backend.module_map().items()}

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.policy.reset()

    # ------------------------------------------------------------------ sampling
    def preprocess(self, obs: Observation) -> dict[str, Any]:
        """Observation → LeRobot batch of one (images, normalised state, tokenised instruction)."""
        if self.flip_images != "none":
            axes = _FLIPS[self.flip_images]
            obs = dataclasses.replace(
                obs, images={c: np.ascontiguousarray(np.flip(img, axes)) for c, img in obs.images.items()}
            )
        frame = observation_to_frame(obs, self._frame_features, self.camera_map)
        return self.preprocessor(frame)

    def to_actions(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable map ``(K, T, max_action_dim)`` normalised sample → ``(K, T, D_action)`` env units."""
        actions = self.postprocessor(self._backend.model_actions(x))
        return actions[..., : self._env_action_dim]

    def initial_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard-normal noise ``(n, chunk_size, max_action_dim)`` (default: from :attr:`generator`)."""
        generator = self.generator if generator is None else generator
        return torch.randn((n, *self.noise_spec.shape), generator=generator, dtype=torch.float32)

    @torch.no_grad()
    def _generate(
        self,
        history: Sequence[Observation],
        n: int,
        noise: torch.Tensor | None,
        denoise_callback: DenoiseCallback | None,
    ) -> np.ndarray:
        batch = self.preprocess(history[-1])
        x = self.initial_noise(n) if noise is None else noise
        x = x.to(device=self._device, dtype=torch.float32)
        velocity = self._backend.encode(batch, n)
        steps = self._backend.num_steps
        dt = -1.0 / steps
        for index in range(steps):
            t = 1.0 + index * dt  # same float arithmetic as LeRobot's euler_integrate
            with denoise_step_context(index, steps, t):  # hooks read the step (activation steering)
                v = velocity(x, torch.tensor(t, dtype=torch.float32, device=x.device).expand(n))
            edit = None
            if denoise_callback is not None:
                edit = self._call_back(denoise_callback, index, steps, t, x, v)
                if edit is not None and edit.model_output is not None:
                    v = edit.checked_model_output(v)
            x = x + dt * v
            if edit is not None and edit.resample is not None:
                x = x[edit.checked_resample(n)]
        return self.to_actions(x).cpu().numpy()

    def _call_back(self, callback: DenoiseCallback, index: int, steps: int, t: float,
                   x: torch.Tensor, v: torch.Tensor) -> StepEdit | None:
        step = DenoiseStep(
            index=index,
            num_steps=steps,
            t=t,
            x=x,
            model_output=v,
            prediction="velocity",
            x0=x - t * v,
            alpha_bar=None,
            to_actions=self.to_actions,
        )
        # Guidance callbacks differentiate rewards through to_actions; sampling itself is no_grad.
        with torch.enable_grad():
            edit = callback(step)
        if edit is not None and not isinstance(edit, StepEdit):
            raise TypeError(f"denoise callback must return StepEdit or None, got {type(edit).__name__}")
        return edit

    @property
    def _device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @torch.no_grad()
    def reference_actions(self, obs: Observation, noise: torch.Tensor) -> np.ndarray:
        """LeRobot's own path for comparison: ``predict_action_chunk(batch, noise=noise)`` on the
        observation repeated ``len(noise)`` times, then the post-processor. ``(n, T, D_action)``."""
        noise = self.noise_spec.check(noise).to(self._device)
        n = noise.shape[0]
        batch = self.preprocess(obs)
        batch = {
            k: v.repeat_interleave(n, dim=0) if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == 1
            else (list(v) * n if isinstance(v, list) and len(v) == 1 else v)
            for k, v in batch.items()
        }
        actions = self.policy.predict_action_chunk(batch, noise=noise)
        return self.postprocessor(actions)[..., : self._env_action_dim].cpu().numpy()


# =========================================================================== checkpoint loading
def _load_weights(policy_cls: type, folder: Path, config: Any) -> nn.Module:
    """``policy_cls.from_pretrained`` from a local folder; fail loudly where PI0/PI05 only print."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        policy = policy_cls.from_pretrained(str(folder), config=config)
    printed = buffer.getvalue()
    for line in printed.splitlines():
        log.info("lerobot: %s", line)
    # PI0/PI05.from_pretrained catch loading errors, print them and return the random-init model.
    if "Could not load state dict" in printed or "Returning model without loading" in printed:
        raise CheckpointError(f"weights in '{folder}' could not be loaded: {printed.strip().splitlines()[-1]}")
    return policy
