"""A tiny random OpenVLA checkpoint folder, written offline, with the real folder's layout.

:func:`write_tiny_openvla_checkpoint` produces what ``openvla/openvla-7b`` ships — ``config.json``
(same schema: ``vision_backbone_id``, ``timm_model_ids``, ``text_config``, ``norm_stats`` …),
``model-0000k-of-0000n.safetensors`` shards + ``model.safetensors.index.json`` with the same
weight names, ``tokenizer.json`` / ``tokenizer_config.json`` / ``special_tokens_map.json`` and
``preprocessor_config.json`` — at a size that decodes an action in well under a second on a CPU.
It loads through exactly the same :meth:`OpenVLAPolicy.from_pretrained` path as a real folder.

Only two things differ from a real checkpoint, both explicit:

* ``config.json`` carries ``"embodied_steer_timm_kwargs"`` (see ``openvla_model``): the timm ids
  are the real ones, and these kwargs shrink them (width, depth, heads).
* The tokenizer is a Llama-style BPE (``▁`` word boundaries, byte fallback, ``<s>`` = 1) built
  here with the ``tokenizers`` library from a few hundred pieces instead of 32000; like Llama-2's,
  its last 256 ids are unused pieces that the action bins take over, and ``<PAD>`` follows them.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from embodied_steer.adapters.openvla_model import TIMM_KWARGS_KEY, OpenVLAConfig, build_network, checkpoint_name
from embodied_steer.adapters.openvla_processing import EMPTY_TOKEN

TINY_TOKENIZER_VOCAB = 1024
PAD_TO_MULTIPLE_OF = 64
TINY_TIMM_KWARGS = (
    {"embed_dim": 32, "depth": 3, "num_heads": 2},
    {"embed_dim": 48, "depth": 3, "num_heads": 2},
)
TINY_TEXT_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}
#: ``norm_stats`` of the tiny checkpoint: two datasets; the gripper (last dim) is not normalised.
TINY_NORM_STATS: dict[str, Any] = {
    "tiny_lift": {
        "action": {
            "q01": [-0.5, -0.4, -0.3, -0.2, -0.1, -0.05, 0.0],
            "q99": [0.5, 0.6, 0.7, 0.2, 0.3, 0.05, 1.0],
            "mask": [True, True, True, True, True, True, False],
            "mean": [0.0] * 7,
            "std": [0.2] * 7,
            "min": [-1.0] * 7,
            "max": [1.0] * 7,
        },
        "proprio": {"q01": [0.0] * 7, "q99": [0.0] * 7, "mean": [0.0] * 7, "std": [0.0] * 7},
        "num_transitions": 1000,
        "num_trajectories": 20,
    },
    "tiny_other": {
        "action": {
            "q01": [-2.0] * 7,
            "q99": [2.0] * 7,
            "mask": [True] * 7,
            "mean": [0.0] * 7,
            "std": [1.0] * 7,
        },
        "num_transitions": 10,
        "num_trajectories": 1,
    },
}
_WORDS = (
    "In What action should the robot take to Out pick up lift red cube black bowl place it on plate "
    "open close drawer put move left right slowly carefully fast top of and in the"
).split()


def build_tiny_tokenizer(vocab_size: int = TINY_TOKENIZER_VOCAB) -> Any:
    """A Llama-2-style BPE tokenizer (``tokenizers.Tokenizer``) with ``vocab_size`` base pieces + ``<PAD>``.

    Ids: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, byte-fallback pieces ``<0x00>``…``<0xFF>`` 3–258,
    ``▁``, printable characters, merged word pieces, then unused pieces up to ``vocab_size``;
    ``<PAD>`` = ``vocab_size``. Text is normalised as Llama-2's (``▁`` prepended, spaces → ``▁``).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    vocab[EMPTY_TOKEN] = len(vocab)
    for char in string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        piece = EMPTY_TOKEN
        for char in word:
            if piece + char not in vocab:
                merges.append((piece, char))
                vocab[piece + char] = len(vocab)
            piece += char
    if len(vocab) > vocab_size - 256:
        raise ValueError(f"tiny tokenizer needs vocab_size >= {len(vocab) + 256}, got {vocab_size}")
    for k in range(len(vocab), vocab_size):
        vocab[f"<unused{k}>"] = k
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                                     fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend(EMPTY_TOKEN),
                                                 normalizers.Replace(" ", EMPTY_TOKEN)])
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace(EMPTY_TOKEN, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0),
    ])
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    tokenizer.add_special_tokens([AddedToken("<PAD>", normalized=False, special=True)])
    return tokenizer


def tiny_openvla_config(
    tokenizer_vocab: int = TINY_TOKENIZER_VOCAB,
    *,
    norm_stats: Mapping[str, Any] | None = None,
    text_config: Mapping[str, Any] | None = None,
    timm_kwargs: tuple[Mapping[str, Any], ...] = TINY_TIMM_KWARGS,
) -> dict[str, Any]:
    """``config.json`` of a tiny checkpoint: the schema of ``openvla/openvla-7b`` + the timm overrides."""
    padded = -(-(tokenizer_vocab + 1) // PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF  # base + <PAD>, rounded up
    return {
        "architectures": ["OpenVLAForActionPrediction"],
        "model_type": "openvla",
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": "resize-naive",
        "image_sizes": [224, 224],
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None],
        "llm_max_length": 2048,
        "pad_token_id": tokenizer_vocab,
        "pad_to_multiple_of": PAD_TO_MULTIPLE_OF,
        "n_action_bins": 256,
        "norm_stats": dict(norm_stats if norm_stats is not None else TINY_NORM_STATS),
        "output_projector_states": False,
        "text_config": {
            "model_type": "llama",
            "pad_token_id": tokenizer_vocab,
            "torch_dtype": "float32",
            "vocab_size": padded,
            **dict(text_config if text_config is not None else TINY_TEXT_CONFIG),
        },
        "torch_dtype": "float32",
        TIMM_KWARGS_KEY: [dict(k) for k in timm_kwargs],
    }


def tiny_network_state(config: OpenVLAConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the tiny network under their *checkpoint* names.

    LayerScale factors are drawn in [0.2, 1] (timm starts them at 1e-5, which would hide the
    vision path) and the action-token rows of ``lm_head`` are scaled up so that an untrained
    model already prefers action tokens most of the time.
    """
    torch.manual_seed(seed)
    network = build_network(config, "cpu")
    state = {}
    vocab_end = config.action_vocab_end
    for key, tensor in network.state_dict().items():
        tensor = tensor.detach().clone()
        if key.endswith(".gamma"):
            tensor = torch.empty_like(tensor).uniform_(0.2, 1.0)
        if key == "language_model.lm_head.weight":
            tensor[vocab_end - config.n_action_bins: vocab_end] *= 25.0
        state[checkpoint_name(key)] = tensor.contiguous()
    return state


def write_tiny_openvla_checkpoint(folder: str | Path, *, seed: int = 0, num_shards: int = 2,
                                  norm_stats: Mapping[str, Any] | None = None) -> Path:
    """Write a complete tiny OpenVLA folder (see the module docstring) and return its path."""
    from safetensors.torch import save_file

    from embodied_steer.adapters.openvla_processing import ImageTransform

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {**specials, "add_bos_token": True, "add_eos_token": False, "tokenizer_class": "LlamaTokenizer",
         "model_max_length": 2048}, indent=2))
    raw = tiny_openvla_config(norm_stats=norm_stats)
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    config = OpenVLAConfig.from_dict(raw)
    transform = ImageTransform.for_checkpoint(None, config.timm_model_ids, config.image_sizes,
                                              config.image_resize_strategy)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "PrismaticImageProcessor",
        "use_fused_vision_backbone": True,
        "image_resize_strategy": config.image_resize_strategy,
        "input_sizes": [[3, t.size, t.size] for t in transform.towers],
        "interpolations": [t.interpolation for t in transform.towers],
        "means": [list(t.mean) for t in transform.towers],
        "stds": [list(t.std) for t in transform.towers],
    }, indent=2))
    state = tiny_network_state(config, seed)
    names = list(state)
    groups = [list(part) for part in np.array_split(np.array(names, dtype=object), num_shards)]
    weight_map, total = {}, 0
    for index, group in enumerate(groups, start=1):
        shard = f"model-{index:05d}-of-{num_shards:05d}.safetensors"
        save_file({name: state[name] for name in group}, str(folder / shard), metadata={"format": "pt"})
        for name in group:
            weight_map[name] = shard
            total += state[name].numel() * state[name].element_size()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return folder
