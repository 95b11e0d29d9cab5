"""A small token policy of OpenVLA's kind on a plain ``transformers`` Llama, for tests and benchmarks.

The instruction is encoded byte by byte (ids ``4 + byte``), the proprioceptive state is discretised
into ``num_bins`` bins and appended as tokens from the last ``num_bins`` vocabulary ids (OpenVLA's
action-bin convention), then ``action_dim`` action tokens are decoded greedily with a KV cache from
the same last ``num_bins`` ids and mapped to ``[-1, 1]``. Random weights: it is a *structure* for
steering tests, not a useful policy.

Module map (OpenVLA's names): ``llm.embed_tokens``, ``llm.layers.{i}`` and its
``.self_attn.o_proj``, ``.mlp``, ``.mlp.down_proj``, ``llm.norm``, ``llm.lm_head``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from embodied_steer.core.policy import DenoiseCallback, InterventionPoint, PolicyInfo, SteerablePolicy
from embodied_steer.core.types import ActionBounds, Observation

BYTE_OFFSET = 4


def tiny_llama_config(
    *, layers: int = 2, width: int = 64, mlp: int = 128, heads: int = 4, vocab: int = 640, seed: int = 0
):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab, hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )


class TinyLlamaPolicy(SteerablePolicy):
    """Token policy over a random-init ``LlamaForCausalLM`` (``ACTIVATIONS`` only).

    Args:
        layers, width, mlp, heads, vocab: model sizes.
        num_bins: action / state bins = the last ``num_bins`` vocabulary ids.
        action_dim, state_dim: sizes of the action and of the (optional) state.
        seed: weight initialisation seed.
    """

    interventions = frozenset({InterventionPoint.ACTIVATIONS})

    def __init__(self, *, layers: int = 2, width: int = 64, mlp: int = 128, heads: int = 4, vocab: int = 640,
                 num_bins: int = 256, action_dim: int = 7, state_dim: int | None = None, seed: int = 0,
                 name: str = "tiny-llama") -> None:
        from transformers import LlamaForCausalLM

        if num_bins + BYTE_OFFSET + 256 > vocab:
            raise ValueError(f"vocab {vocab} too small for {num_bins} bins + 256 byte tokens + {BYTE_OFFSET} specials")
        super().__init__(PolicyInfo(name=name, chunk_size=1, execute_steps=1,
                                    action_bounds=ActionBounds.symmetric(action_dim), state_dim=state_dim,
                                    uses_instruction=True), seed=seed)
        torch.manual_seed(seed)
        self.model = LlamaForCausalLM(tiny_llama_config(layers=layers, width=width, mlp=mlp, heads=heads, vocab=vocab)).eval()
        self.num_bins, self.action_dim, self.vocab = num_bins, action_dim, vocab

    # ------------------------------------------------------------------ tokens
    @property
    def bin_ids(self) -> torch.Tensor:
        """Vocabulary ids of the action bins (the last ``num_bins``), bin 0 first."""
        return torch.arange(self.vocab - self.num_bins, self.vocab)

    def token_strings(self) -> list[str]:
        """A readable string per vocabulary id: specials, bytes (``'a'``), ``<bin_k>``, ``<unused_i>``."""
        out = []
        for i in range(self.vocab):
            if i < BYTE_OFFSET:
                out.append(("<pad>", "<bos>", "<eos>", "<unk>")[i])
            elif i >= self.vocab - self.num_bins:
                out.append(f"<bin_{i - (self.vocab - self.num_bins)}>")
            elif i < BYTE_OFFSET + 256:
                b = i - BYTE_OFFSET
                out.append(chr(b) if 32 <= b < 127 else f"<0x{b:02X}>")
            else:
                out.append(f"<unused_{i}>")
        return out

    def encode(self, obs: Observation) -> torch.Tensor:
        """``(1, S)`` prompt ids: bos, instruction bytes, state bins."""
        ids = [1] + [BYTE_OFFSET + b for b in obs.instruction.encode()[:200]]
        if obs.state is not None:
            bins = np.clip(((np.asarray(obs.state) + 1) / 2 * self.num_bins).astype(int), 0, self.num_bins - 1)
            ids += [int(self.vocab - self.num_bins + b) for b in bins]
        return torch.tensor([ids], dtype=torch.long)

    # ------------------------------------------------------------------ policy
    def modules(self) -> dict[str, nn.Module]:
        inner = self.model.model
        out: dict[str, nn.Module] = {"llm.embed_tokens": inner.embed_tokens}
        for i, layer in enumerate(inner.layers):
            out[f"llm.layers.{i}"] = layer
            out[f"llm.layers.{i}.self_attn.o_proj"] = layer.self_attn.o_proj
            out[f"llm.layers.{i}.mlp"] = layer.mlp
            out[f"llm.layers.{i}.mlp.down_proj"] = layer.mlp.down_proj
        out["llm.norm"] = inner.norm
        out["llm.lm_head"] = self.model.lm_head
        return out

    @torch.no_grad()
    def action_logits(self, obs: Observation) -> torch.Tensor:
        """``(action_dim, num_bins)`` logits of each action token (greedy decoding)."""
        ids = self.encode(obs)
        out = self.model(input_ids=ids, use_cache=True)
        logits = []
        past = out.past_key_values
        last = out.logits[:, -1]
        for _ in range(self.action_dim):
            bins = last[:, -self.num_bins:]
            logits.append(bins[0])
            token = bins.argmax(-1) + (self.vocab - self.num_bins)
            out = self.model(input_ids=token[:, None], past_key_values=past, use_cache=True)
            past, last = out.past_key_values, out.logits[:, -1]
        return torch.stack(logits)

    def _generate(self, history: Sequence[Observation], n: int, noise: torch.Tensor | None,
                  denoise_callback: DenoiseCallback | None) -> np.ndarray:
        bins = self.action_logits(history[-1]).argmax(-1).float()
        actions = (bins + 0.5) / self.num_bins * 2 - 1
        return actions[None, None].repeat(n, 1, 1).numpy()
