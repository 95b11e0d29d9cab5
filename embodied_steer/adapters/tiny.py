"""Tiny, randomly initialised PI0 / PI05 / SmolVLA policies built offline, for tests and benchmarks.

They have the real LeRobot architecture classes (PaliGemma + Gemma action expert, SmolVLM + Llama
action expert), the real processor pipelines and a real (character-level) tokenizer, but a few
layers of small width, so one action chunk takes ~0.1 s on a CPU and nothing is downloaded.

Two things need care because LeRobot hard-codes full-size pieces:

* PI0 / PI05 take their transformer sizes from ``get_gemma_config("gemma_2b" | "gemma_300m")``
  and build a full SigLIP-So400m vision tower and a 257k vocabulary inside
  ``PaliGemmaWithExpertModel``. :func:`tiny_architecture` swaps those three module-level factories
  *in memory*, for the duration of the model's construction only (the installed files are never
  touched), so that the same classes come out small. The sizes are saved next to the checkpoint
  (``embodied_steer.json``) and :meth:`LeRobotFlowPolicy.from_pretrained` rebuilds the same shapes.
* SmolVLA reads its VLM from ``vlm_model_name``: a folder with a ``SmolVLMConfig`` and a
  ``SmolVLMProcessor`` (image processor + tokenizer with the image special tokens). Weights are not
  needed because ``load_vlm_weights=False`` builds the VLM at random.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import string
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

# Character-level vocabulary: every printable ASCII character is one token, so any instruction
# (and PI05's "State: 12 200 ..." prompt) tokenises without unknown tokens.
_SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
_CHARACTERS = string.ascii_letters + string.digits + string.punctuation + " \n"
# SmolVLM's processor and SmolVLA look these up by attribute on the tokenizer.
_SMOLVLM_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}

#: LIBERO-like features of the tiny policies: two cameras, 8-D state, 7-D action.
TINY_CAMERA_MAP = {
    "observation.images.image": "agentview",
    "observation.images.image2": "robot0_eye_in_hand",
}
TINY_STATE_DIM = 8
TINY_ACTION_DIM = 7


@dataclasses.dataclass(frozen=True)
class TinyArchitecture:
    """Sizes of a reduced PaliGemma + Gemma-expert stack (PI0 / PI05).

    LeRobot's joint-attention code path assumes 8 query heads and one KV head; the VLM and the
    expert share ``head_dim`` and ``depth`` because the expert attends to the VLM's KV cache.
    """

    vlm_width: int = 64
    vlm_mlp_dim: int = 128
    expert_width: int = 32
    expert_mlp_dim: int = 64
    depth: int = 2
    head_dim: int = 8
    vision_width: int = 32
    vision_mlp_dim: int = 64
    vision_layers: int = 1
    vision_heads: int = 2
    patch_size: int = 8
    vocab_size: int = 128

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TinyArchitecture":
        return cls(**{k: int(v) for k, v in values.items()})


_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def tiny_architecture(policy_type: str, arch: TinyArchitecture) -> Iterator[None]:
    """While active, ``PI0Policy`` / ``PI05Policy`` construct a model with ``arch``'s sizes.

    Only for ``policy_type`` in ``{"pi0", "pi05"}``; a no-op for other types. The swap is undone
    on exit, also after an exception.
    """
    if policy_type not in ("pi0", "pi05"):
        yield
        return
    module = importlib.import_module(f"lerobot.policies.{policy_type}.modeling_{policy_type}")
    real_gemma_config = module.get_gemma_config
    real_paligemma = module.PaliGemmaForConditionalGenerationWithPiGemma
    real_expert = module.PiGemmaForCausalLM

    def gemma_config(variant: str) -> Any:
        if variant == "gemma_2b":
            width, mlp = arch.vlm_width, arch.vlm_mlp_dim
        else:
            width, mlp = arch.expert_width, arch.expert_mlp_dim
        return module.GemmaConfig(
            width=width, depth=arch.depth, mlp_dim=mlp, num_heads=8, num_kv_heads=1, head_dim=arch.head_dim
        )

    def paligemma(config: Any) -> Any:
        vision = config.vision_config
        vision.hidden_size = arch.vision_width
        vision.intermediate_size = arch.vision_mlp_dim
        vision.num_hidden_layers = arch.vision_layers
        vision.num_attention_heads = arch.vision_heads
        vision.patch_size = arch.patch_size
        vision.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = arch.vocab_size
        config._vocab_size = arch.vocab_size  # noqa: SLF001 - PaliGemmaConfig keeps its own copy
        config.image_token_index = arch.vocab_size - 1
        return real_paligemma(config)

    def expert(config: Any) -> Any:
        config.vocab_size = arch.vocab_size
        return real_expert(config)

    with _PATCH_LOCK:
        module.get_gemma_config = gemma_config
        module.PaliGemmaForConditionalGenerationWithPiGemma = paligemma
        module.PiGemmaForCausalLM = expert
        try:
            yield
        finally:
            module.get_gemma_config = real_gemma_config
            module.PaliGemmaForConditionalGenerationWithPiGemma = real_paligemma
            module.PiGemmaForCausalLM = real_expert


# --------------------------------------------------------------------------- assets
def build_tiny_tokenizer(folder: str | Path, *, smolvlm_tokens: bool = False) -> Path:
    """Save a character-level ``PreTrainedTokenizerFast`` (~100 tokens) to ``folder``.

    Args:
        folder: output folder (created).
        smolvlm_tokens: also register SmolVLM's image special tokens.

    Returns:
        ``folder``, loadable with ``AutoTokenizer.from_pretrained(folder)``.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    vocab = {token: i for i, token in enumerate([*_SPECIAL_TOKENS, *_CHARACTERS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        extra_special_tokens=dict(_SMOLVLM_TOKENS) if smolvlm_tokens else None,
    )
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_smolvlm(
    folder: str | Path,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 64,
    layers: int = 2,
    vision_width: int = 32,
) -> Path:
    """Save a tiny SmolVLM config + processor (no weights) to ``folder`` for SmolVLA's ``vlm_model_name``.

    The vision encoder sees ``image_size``² images in ``patch_size``² patches; the connector's
    pixel shuffle (scale factor 2) turns them into ``(image_size / patch_size / 2)²`` tokens.
    """
    from transformers import AutoTokenizer, SmolVLMConfig
    from transformers.models.smolvlm import SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    folder = Path(folder)
    build_tiny_tokenizer(folder, smolvlm_tokens=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = SmolVLMConfig(
        vision_config=dict(
            hidden_size=vision_width,
            intermediate_size=2 * vision_width,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=width // 4,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        ),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids(_SMOLVLM_TOKENS["image_token"]),
        pad_token_id=tokenizer.pad_token_id,
    )
    config.save_pretrained(folder)
    size = {"longest_edge": image_size}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(do_image_splitting=False, size=size, max_image_size=size),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=(image_size // patch_size // 2) ** 2,
    )
    processor.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- features and stats
def _features(image_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from lerobot.configs import FeatureType, PolicyFeature

    inputs: dict[str, Any] = {
        key: PolicyFeature(type=FeatureType.VISUAL, shape=(3, image_size, image_size)) for key in TINY_CAMERA_MAP
    }
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(TINY_STATE_DIM,))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(TINY_ACTION_DIM,))}
    return inputs, outputs


def tiny_dataset_stats(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Non-trivial normalisation stats for state and action (mean/std and q01/q99), so that
    (un)normalisation is exercised rather than the identity."""
    rng = np.random.default_rng(seed)
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for key, dim in (("observation.state", TINY_STATE_DIM), ("action", TINY_ACTION_DIM)):
        mean = rng.uniform(-0.5, 0.5, dim)
        std = rng.uniform(0.2, 1.0, dim)
        stats[key] = {
            name: torch.as_tensor(value, dtype=torch.float32)
            for name, value in {
                "mean": mean,
                "std": std,
                "min": mean - 3 * std,
                "max": mean + 3 * std,
                "q01": mean - 2.3 * std,
                "q99": mean + 2.3 * std,
            }.items()
        }
    return stats


def tiny_observation(seed: int = 0, image_size: int = 32, instruction: str = "pick up the black bowl"):
    """A random observation with the cameras, state and instruction the tiny policies need."""
    from embodied_steer.core.types import Observation

    rng = np.random.default_rng(seed)
    images = {
        camera: rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        for camera in TINY_CAMERA_MAP.values()
    }
    state = rng.uniform(-1, 1, TINY_STATE_DIM).astype(np.float32)
    return Observation(images=images, state=state, instruction=instruction)


# --------------------------------------------------------------------------- tiny policies
def _common_kwargs(chunk_size: int, n_action_steps: int, image_size: int) -> dict[str, Any]:
    inputs, outputs = _features(image_size)
    return dict(
        input_features=inputs,
        output_features=outputs,
        chunk_size=chunk_size,
        n_action_steps=n_action_steps,
        device="cpu",
    )


def tiny_pi0(
    tmpdir: str | Path,
    *,
    chunk_size: int = 16,
    n_action_steps: int = 8,
    num_steps: int = 10,
    image_size: int = 32,
    arch: TinyArchitecture | None = None,
    seed: int = 0,
):
    """A random-init PI0 with :class:`TinyArchitecture` sizes and a tokenizer in ``tmpdir/tokenizer``."""
    return _tiny_paligemma("pi0", tmpdir, chunk_size, n_action_steps, num_steps, image_size, arch, seed)


def tiny_pi05(
    tmpdir: str | Path,
    *,
    chunk_size: int = 16,
    n_action_steps: int = 8,
    num_steps: int = 10,
    image_size: int = 32,
    arch: TinyArchitecture | None = None,
    seed: int = 0,
):
    """A random-init PI05 (state as text tokens, adaRMS time conditioning in the expert)."""
    return _tiny_paligemma("pi05", tmpdir, chunk_size, n_action_steps, num_steps, image_size, arch, seed)


def _tiny_paligemma(policy_type, tmpdir, chunk_size, n_action_steps, num_steps, image_size, arch, seed):
    from embodied_steer.adapters.lerobot_flow import LeRobotFlowPolicy

    if policy_type == "pi0":
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as config_cls
    else:
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as config_cls

    tokenizer = build_tiny_tokenizer(Path(tmpdir) / "tokenizer")
    config = config_cls(
        **_common_kwargs(chunk_size, n_action_steps, image_size),
        image_resolution=(image_size, image_size),
        num_inference_steps=num_steps,
        # Character-level tokens: PI05's prompt carries the discretised state as text.
        tokenizer_max_length=48 if policy_type == "pi0" else 96,
    )
    torch.manual_seed(seed)
    return LeRobotFlowPolicy.from_config(
        config,
        tiny_dataset_stats(seed),
        tokenizer_path=tokenizer,
        camera_map=TINY_CAMERA_MAP,
        tiny=arch or TinyArchitecture(),
        name=f"tiny-{policy_type}",
    )


def tiny_smolvla(
    tmpdir: str | Path,
    *,
    chunk_size: int = 16,
    n_action_steps: int = 8,
    num_steps: int = 10,
    image_size: int = 32,
    layers: int = 2,
    seed: int = 0,
):
    """A random-init SmolVLA whose VLM (config + processor) lives in ``tmpdir/vlm``."""
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    from embodied_steer.adapters.lerobot_flow import LeRobotFlowPolicy

    vlm = build_tiny_smolvlm(Path(tmpdir) / "vlm", image_size=image_size, layers=layers)
    config = SmolVLAConfig(
        **_common_kwargs(chunk_size, n_action_steps, image_size),
        vlm_model_name=str(vlm),
        load_vlm_weights=False,
        num_vlm_layers=layers,
        num_expert_layers=layers,
        resize_imgs_with_padding=(image_size, image_size),
        num_steps=num_steps,
        tokenizer_max_length=48,
    )
    torch.manual_seed(seed)
    return LeRobotFlowPolicy.from_config(
        config, tiny_dataset_stats(seed), camera_map=TINY_CAMERA_MAP, name="tiny-smolvla"
    )


TINY_BUILDERS = {"pi0": tiny_pi0, "pi05": tiny_pi05, "smolvla": tiny_smolvla}
