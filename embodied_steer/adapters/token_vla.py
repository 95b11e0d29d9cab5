"""A small VLA of OpenVLA's kind, and its :class:`SteerablePolicy` adapter.

What it is
----------
A Llama language model (``transformers.LlamaForCausalLM``, a few layers of small width) whose
vocabulary is real words followed, as the **last 256 ids**, by action-bin tokens — OpenVLA's
action tokenisation: each action dimension is normalised to [-1, 1] with the dataset's 1st / 99th
percentiles (dimensions whose percentiles coincide — the OSC rotation deltas, always 0 in the Lift
demonstrations — are passed through as their constant, like OpenVLA's normalisation mask), and
split into 256 uniform bins; bin ``b`` is token ``vocab_size - 256 + b`` (ascending: higher bin,
higher value).

The shipped Lift demonstrations are state-only, so the observation (proprioception + privileged
object state, normalised by mean / std) goes through a small MLP *projector* into
``num_patches`` prefix embeddings, the way OpenVLA's projector feeds vision patches to the LLM.

Sequence (one control step; ``[P×obs]`` are projector outputs, everything else is a token)::

    <bos> [P×obs] in : what action should the robot take to <instruction> ? out : <z-word> <speed-word> a_0 … a_6 <eos>

``<z-word> <speed-word>`` is a two-word *motion plan* (``up`` / ``down`` / ``hold``, then
``fast`` / ``slow``) that the model says before its 7 action tokens, in the spirit of embodied
chain-of-thought VLAs (ECoT's "move up" primitives). It is an **auxiliary objective** added so
that concept words have a job in this small model: its labels are derived from the demonstration
action itself (z component, speed of the position delta; thresholds in :class:`VLAConfig`).
Everything else is OpenVLA's recipe. Decoding is constrained per slot (the plan slots to their
words, the action slots to the 256 bins); ``act`` samples the plan words (temperature 1) and takes
the action bins greedily, :meth:`TokenVLAPolicy.sample` draws every slot with a temperature. One
action per inference call (chunk 1, as OpenVLA).

Module map (``ACTIVATIONS``), OpenVLA adapter naming::

    projector                   once per chunk (the observation → prefix embeddings)
    llm.embed_tokens            once per decoded token (prefill, then each new token; KV cache)
    llm.layers.{i}              ″
    llm.layers.{i}.self_attn    ″   (and its ``.o_proj``)
    llm.layers.{i}.mlp          ″
    llm.layers.{i}.mlp.down_proj  ″  (its input is the MLP's neuron activations, width ``intermediate_size``)
    llm.norm, llm.lm_head       ″
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from embodied_steer.core.errors import CheckpointError, ObservationError
from embodied_steer.core.policy import DenoiseCallback, InterventionPoint, PolicyInfo, SteerablePolicy
from embodied_steer.core.types import ActionBounds, Observation

N_BINS = 256
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
Z_WORDS = ("up", "down", "hold")
SPEED_WORDS = ("fast", "slow")
PROMPT = "in : what action should the robot take to {instruction} ? out :"

#: Word vocabulary (before the 256 action bins). Concept words are included even where the
#: training data never uses them, so users can search for them by vocabulary projection.
WORDS = tuple(
    dict.fromkeys(
        """in out : ? . , what action should the robot take to lift pick up raise grab grasp hold
        the a an red green blue cube block object box it and then move go down left right forward
        backward fast slow slowly quickly quick careful carefully gently gentle open close closed
        gripper hand arm high low higher lower stop still table top place put push pull rotate turn
        stack on off of with from into above below near far over under towards away please now
        again slightly little bit more less very smooth smoothly steady safe safely hurry rapid
        speed height grip release drop carry bring reach approach center middle small
        large light heavy yes no""".split()
    )
)

#: Instruction variants used in training (the environment says "lift the red cube").
INSTRUCTIONS = (
    "lift the red cube",
    "pick up the cube",
    "pick up the red cube",
    "lift the cube",
    "raise the red block",
    "grab the cube and lift it",
    "grasp the red cube and raise it",
    "pick up the red block",
)


# ---------------------------------------------------------------------------------------- config
@dataclass
class VLAConfig:
    """Everything besides the weights that defines a :class:`TokenVLA` (saved as ``vla_config.json``)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    num_patches: int = 4
    projector_hidden: int = 256
    state_dim: int = 9
    env_state_dim: int = 10
    action_dim: int = 7
    max_positions: int = 64
    # normalisation statistics (filled from the dataset)
    obs_mean: list[float] = field(default_factory=list)
    obs_std: list[float] = field(default_factory=list)
    action_q01: list[float] = field(default_factory=list)
    action_q99: list[float] = field(default_factory=list)
    # plan-word labels (auxiliary objective): z action above/below ±z_threshold → up / down, else
    # hold; position-delta norm above speed_threshold → fast, else slow (environment action units)
    z_threshold: float = 0.3
    speed_threshold: float = 0.5
    z_dim: int = 2

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "VLAConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


# ---------------------------------------------------------------------------------------- tokenizer
def build_tokenizer(words: Sequence[str] = WORDS):
    """Word-level ``tokenizers.Tokenizer``: specials, ``words``, then ``<bin_000>`` … ``<bin_255>``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab_list = [*SPECIAL_TOKENS, *dict.fromkeys(w for w in words if w not in SPECIAL_TOKENS)]
    vocab_list += [f"<bin_{b:03d}>" for b in range(N_BINS)]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


class VLATokenizer:
    """Words ↔ ids and actions ↔ bin tokens for a :class:`TokenVLA`."""

    def __init__(self, backend, config: VLAConfig) -> None:
        self.backend = backend
        self.config = config
        self.vocab_size = int(backend.get_vocab_size())
        self.bin_offset = self.vocab_size - N_BINS
        if backend.id_to_token(self.bin_offset) != "<bin_000>":
            raise CheckpointError("tokenizer: the last 256 ids must be the action bins <bin_000>..<bin_255>")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (backend.token_to_id(t) for t in SPECIAL_TOKENS)
        self.z_ids = [self.token_id(w) for w in Z_WORDS]
        self.speed_ids = [self.token_id(w) for w in SPEED_WORDS]
        self.q01 = np.asarray(config.action_q01, np.float32)
        self.q99 = np.asarray(config.action_q99, np.float32)
        self.span = self.q99 - self.q01
        self.active = self.span > 1e-6

    def token_id(self, word: str) -> int:
        idx = self.backend.token_to_id(word)
        if idx is None:
            raise KeyError(f"'{word}' is not in the vocabulary")
        return int(idx)

    def id_to_token(self, idx: int) -> str:
        return str(self.backend.id_to_token(int(idx)))

    def encode_words(self, text: str) -> list[int]:
        return list(self.backend.encode(text).ids)

    def prompt_ids(self, instruction: str) -> list[int]:
        """Ids of ``<bos>`` … ``out :`` (the projector's patches go right after ``<bos>``)."""
        text = PROMPT.format(instruction=instruction.strip().lower().rstrip(".") or "lift the red cube")
        return [self.bos_id, *self.encode_words(text)]

    # ---- actions
    def normalise(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, np.float32)
        out = np.where(self.active, 2.0 * (a - self.q01) / np.where(self.active, self.span, 1.0) - 1.0, 0.0)
        return np.clip(out, -1.0, 1.0)

    def unnormalise(self, normed: np.ndarray) -> np.ndarray:
        n = np.asarray(normed, np.float32)
        return np.where(self.active, (n + 1.0) / 2.0 * self.span + self.q01, self.q01).astype(np.float32)

    def to_bins(self, actions: np.ndarray) -> np.ndarray:
        """``(..., D)`` environment actions → bin indices 0..255."""
        return np.rint((self.normalise(actions) + 1.0) / 2.0 * (N_BINS - 1)).astype(np.int64)

    def from_bins(self, bins: np.ndarray) -> np.ndarray:
        """Bin indices → environment actions (bin centres, un-normalised)."""
        return self.unnormalise(np.asarray(bins, np.float32) / (N_BINS - 1) * 2.0 - 1.0)

    def plan_words(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plan labels for ``(N, D)`` actions: z-word index (0 up, 1 down, 2 hold), speed index (0 fast, 1 slow)."""
        a = np.asarray(actions, np.float32)
        z = a[:, self.config.z_dim]
        zi = np.where(z > self.config.z_threshold, 0, np.where(z < -self.config.z_threshold, 1, 2))
        speed = np.linalg.norm(a[:, :3], axis=1)
        si = np.where(speed > self.config.speed_threshold, 0, 1)
        return zi.astype(np.int64), si.astype(np.int64)


# ---------------------------------------------------------------------------------------- model
class Projector(nn.Module):
    """Observation vector → ``num_patches`` prefix embeddings (OpenVLA's MLP projector, state version)."""

    def __init__(self, in_dim: int, hidden: int, width: int, num_patches: int) -> None:
        super().__init__()
        self.num_patches, self.width = num_patches, width
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, num_patches * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x))).view(x.shape[0], self.num_patches, self.width)


class TokenVLA(nn.Module):
    """Projector + ``LlamaForCausalLM``; ``forward`` returns next-token logits for a prefix + tokens."""

    def __init__(self, config: VLAConfig, vocab_size: int) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.config = config
        self.llm_config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=config.max_positions,
            tie_word_embeddings=False,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
        self.llm = LlamaForCausalLM(self.llm_config)
        self.projector = Projector(
            config.state_dim + config.env_state_dim, config.projector_hidden, config.hidden_size, config.num_patches
        )
        self.register_buffer("obs_mean", torch.tensor(config.obs_mean or [0.0] * self.obs_dim, dtype=torch.float32))
        self.register_buffer("obs_std", torch.tensor(config.obs_std or [1.0] * self.obs_dim, dtype=torch.float32))

    @property
    def obs_dim(self) -> int:
        return self.config.state_dim + self.config.env_state_dim

    def embed_prefix(self, obs: torch.Tensor, prompt_ids: torch.Tensor) -> torch.Tensor:
        """``(B, obs_dim)`` raw observation + ``(B, L)`` prompt ids (``<bos>`` first) → ``(B, 1+P+L-1, d)``."""
        patches = self.projector((obs - self.obs_mean) / self.obs_std)
        emb = self.llm.model.embed_tokens(prompt_ids)
        return torch.cat([emb[:, :1], patches, emb[:, 1:]], dim=1)

    def forward_train(self, obs: torch.Tensor, prompt_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits ``(B, T, V)`` predicting each of ``target_ids`` ``(B, T)``."""
        prefix = self.embed_prefix(obs, prompt_ids)
        tgt_emb = self.llm.model.embed_tokens(target_ids[:, :-1])
        x = torch.cat([prefix, tgt_emb], dim=1)
        logits = self.llm(inputs_embeds=x, use_cache=False).logits
        return logits[:, prefix.shape[1] - 1 :]

    def module_map(self) -> dict[str, nn.Module]:
        names: dict[str, nn.Module] = {"projector": self.projector, "llm.embed_tokens": self.llm.model.embed_tokens}
        for i, layer in enumerate(self.llm.model.layers):
            names[f"llm.layers.{i}"] = layer
            names[f"llm.layers.{i}.self_attn"] = layer.self_attn
            names[f"llm.layers.{i}.self_attn.o_proj"] = layer.self_attn.o_proj
            names[f"llm.layers.{i}.mlp"] = layer.mlp
            names[f"llm.layers.{i}.mlp.down_proj"] = layer.mlp.down_proj
        names["llm.norm"] = self.llm.model.norm
        names["llm.lm_head"] = self.llm.lm_head
        return names


# ---------------------------------------------------------------------------------------- checkpoint io
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "vla_config.json", "model.safetensors", "tokenizer.json"


def save_checkpoint(folder: str | os.PathLike, model: TokenVLA, tokenizer: VLATokenizer, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``vla_config.json``, ``model.safetensors`` (fp32) and ``tokenizer.json`` to ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CONFIG_FILE).write_text(json.dumps({**asdict(model.config), **({"extra": dict(extra)} if extra else {})}, indent=1))
    tokenizer.backend.save(str(folder / TOKENIZER_FILE))
    return folder


def load_checkpoint(folder: str | os.PathLike) -> tuple[TokenVLA, VLATokenizer]:
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    folder = Path(folder)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE) if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"token-VLA checkpoint '{folder}' is missing {', '.join(missing)}")
    config = VLAConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    tokenizer = VLATokenizer(Tokenizer.from_file(str(folder / TOKENIZER_FILE)), config)
    model = TokenVLA(config, tokenizer.vocab_size)
    state = load_file(str(folder / WEIGHTS_FILE))
    result = model.load_state_dict(state, strict=False)
    # lm_head may legitimately be absent in tied models; nothing else may be.
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"token-VLA checkpoint '{folder}': missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    return model.eval(), tokenizer


# ---------------------------------------------------------------------------------------- decoding
@torch.no_grad()
def decode(
    model: TokenVLA,
    tokenizer: VLATokenizer,
    obs: torch.Tensor,
    instruction: str,
    *,
    temperature: float = 0.0,
    plan_temperature: float | None = None,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
) -> dict[str, torch.Tensor]:
    """Decode the plan words and the 7 action tokens for a batch of observations ``(B, obs_dim)``.

    Each slot is constrained to its own token set. Action bins are greedy (``temperature=0``) or
    sampled at ``temperature``; the two plan words are sampled at ``plan_temperature`` (default:
    the same as ``temperature``; 0 = greedy). Returns ``bins`` ``(B, D)``, ``plan`` ``(B, 2)``
    token ids and, with ``return_logits``, the restricted ``logits`` per slot (a list of
    ``(B, n_choices)``).
    """
    b = obs.shape[0]
    prompt = torch.tensor([tokenizer.prompt_ids(instruction)] * b, dtype=torch.long)
    x = model.embed_prefix(obs.float(), prompt)
    allowed = [tokenizer.z_ids, tokenizer.speed_ids] + [list(range(tokenizer.bin_offset, tokenizer.vocab_size))] * model.config.action_dim
    out = model.llm(inputs_embeds=x, use_cache=True)
    past = out.past_key_values
    logits = out.logits[:, -1]
    chosen: list[torch.Tensor] = []
    slot_logits: list[torch.Tensor] = []
    for slot, ids in enumerate(allowed):
        ids_t = torch.tensor(ids, dtype=torch.long)
        restricted = logits[:, ids_t].float()
        slot_logits.append(restricted)
        temp = (temperature if plan_temperature is None else plan_temperature) if slot < 2 else temperature
        if temp > 0:
            probs = torch.softmax(restricted / temp, dim=-1)
            pick = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            pick = restricted.argmax(dim=-1)
        token = ids_t[pick]
        chosen.append(token)
        if slot == len(allowed) - 1:
            break
        out = model.llm(input_ids=token[:, None], past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1]
    tokens = torch.stack(chosen, dim=1)
    result = {"plan": tokens[:, :2], "bins": tokens[:, 2:] - tokenizer.bin_offset}
    if return_logits:
        result["logits"] = slot_logits  # type: ignore[assignment]
    return result


# ---------------------------------------------------------------------------------------- adapter
class TokenVLAPolicy(SteerablePolicy):
    """The small token VLA as a policy: ``ACTIVATIONS`` (module map) and ``SAMPLES`` (temperature).

    Args:
        model, tokenizer: from :func:`load_checkpoint`.
        name: for results and errors.
        temperature: sampling temperature of :meth:`sample` (every slot).
        plan_temperature: temperature of the two plan words in :meth:`act` (default 1.0: drawn
            from the model's distribution; 0: greedy). The action bins of ``act`` are always greedy,
            as OpenVLA's. Why the plan is sampled: after the grasp the state stops changing while
            the demonstrator waits a random 6–11 steps before lifting, so "hold" stays the most
            likely word and a fully greedy policy holds forever (measured: 0/3 episodes); sampling
            the plan word lifts after a few steps, as the demonstrations do.
        action_bounds: the environment's action box (default: [-1, 1]^7).
        instruction: used when an observation carries none.
    """

    interventions = frozenset({InterventionPoint.ACTIVATIONS, InterventionPoint.SAMPLES})

    def __init__(
        self,
        model: TokenVLA,
        tokenizer: VLATokenizer,
        *,
        name: str = "lift_token_vla",
        temperature: float = 1.0,
        plan_temperature: float = 1.0,
        action_bounds: ActionBounds | None = None,
        instruction: str = "lift the red cube",
        seed: int = 0,
    ) -> None:
        cfg = model.config
        super().__init__(
            PolicyInfo(
                name=name,
                chunk_size=1,
                execute_steps=1,
                action_bounds=action_bounds or ActionBounds.symmetric(cfg.action_dim),
                state_dim=cfg.state_dim,
                env_state_dim=cfg.env_state_dim,
                uses_instruction=True,
                extra={"type": "token_vla", "layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
                       "intermediate_size": cfg.intermediate_size, "vocab_size": tokenizer.vocab_size,
                       "action_bins": N_BINS, "temperature": temperature,
                       "plan_temperature": plan_temperature},
            ),
            seed=seed,
        )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (act() decodes the action bins greedily), got {temperature}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if plan_temperature < 0:
            raise ValueError(f"plan_temperature must be >= 0, got {plan_temperature}")
        self.temperature = float(temperature)
        self.plan_temperature = float(plan_temperature)
        self.default_instruction = instruction
        self.last_plan: list[str] = []

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, action_low: Sequence[float] | None = None,
                        action_high: Sequence[float] | None = None, **kwargs: Any) -> "TokenVLAPolicy":
        model, tokenizer = load_checkpoint(path)
        bounds = None
        if action_low is not None and action_high is not None:
            bounds = ActionBounds(np.asarray(action_low), np.asarray(action_high))
        kwargs.setdefault("name", Path(str(path)).name)
        return cls(model, tokenizer, action_bounds=bounds, **kwargs)

    # ------------------------------------------------------------------ intervention points
    def modules(self) -> dict[str, nn.Module]:
        """Named modules (see the module docstring); ``*.mlp.down_proj`` takes the MLP neurons."""
        return self.model.module_map()

    def module_schedule(self) -> dict[str, str]:
        """``projector`` fires once per chunk; every ``llm.*`` module once per decoded token."""
        return {name: ("chunk" if name == "projector" else "token") for name in self.modules()}

    @property
    def unembedding(self) -> torch.Tensor:
        """``(V, d)`` output-token matrix (lm_head weight) for vocabulary projection."""
        return self.model.llm.lm_head.weight

    @property
    def embedding(self) -> torch.Tensor:
        return self.model.llm.model.embed_tokens.weight

    @property
    def final_norm_gain(self) -> torch.Tensor:
        """``(d,)`` weight of the final RMSNorm (the logit-lens ``gain`` for vocabulary projection)."""
        return self.model.llm.model.norm.weight.detach()

    def token_strings(self) -> list[str]:
        """Every vocabulary entry by id (words, then ``<bin_000>`` … ``<bin_255>``)."""
        return [self.tokenizer.id_to_token(i) for i in range(self.tokenizer.vocab_size)]

    def upward_bin_ids(self, threshold: float = 0.1) -> tuple[list[int], list[int]]:
        """Ids of the action-bin tokens whose un-normalised **z** delta is above ``threshold`` and
        below ``-threshold`` (bins are shared by all dimensions, OpenVLA style; their meaning as z
        motion uses the z dimension's normalisation)."""
        bins = np.arange(N_BINS)
        grid = np.full((N_BINS, self.model.config.action_dim), N_BINS // 2)
        grid[:, self.model.config.z_dim] = bins
        z = self.tokenizer.from_bins(grid)[:, self.model.config.z_dim]
        off = self.tokenizer.bin_offset
        return (off + bins[z > threshold]).tolist(), (off + bins[z < -threshold]).tolist()

    # ------------------------------------------------------------------ acting
    def observation_vector(self, obs: Observation) -> torch.Tensor:
        cfg = self.model.config
        if obs.state is None or obs.env_state is None:
            raise ObservationError(f"{self.info.name} needs state ({cfg.state_dim}) and env_state ({cfg.env_state_dim})")
        if obs.state.shape[0] != cfg.state_dim or obs.env_state.shape[0] != cfg.env_state_dim:
            raise ObservationError(
                f"{self.info.name} expects state ({cfg.state_dim},) and env_state ({cfg.env_state_dim},), "
                f"got {obs.state.shape} and {obs.env_state.shape}"
            )
        return torch.as_tensor(np.concatenate([obs.state, obs.env_state]).astype(np.float32))[None]

    def _generate(self, history: Sequence[Observation], n: int, noise: torch.Tensor | None,
                  denoise_callback: DenoiseCallback | None) -> np.ndarray:
        obs = history[-1]
        x = self.observation_vector(obs).expand(n, -1)
        instruction = obs.instruction or self.default_instruction
        if getattr(self, "_sampling", False):
            out = decode(self.model, self.tokenizer, x, instruction, temperature=self.temperature, generator=self.generator)
        else:
            out = decode(self.model, self.tokenizer, x, instruction, temperature=0.0,
                         plan_temperature=self.plan_temperature, generator=self.generator)
        self.last_plan = [self.tokenizer.id_to_token(int(t)) for t in out["plan"][0]]
        actions = self.tokenizer.from_bins(out["bins"].numpy())
        return actions[:, None, :]

    def sample(self, obs: Observation, n: int, *, noise: torch.Tensor | None = None):
        """``n`` action chunks drawn with :attr:`temperature` on every slot."""
        self._sampling = True
        try:
            return super().sample(obs, n, noise=noise)
        finally:
            self._sampling = False
