"""Neuron discovery by vocabulary projection, and named neuron clusters in an editable file.

An MLP writes ``Σ_j a_j · w_j`` into the residual stream, where ``a_j`` is neuron ``j``'s activation
(the down-projection's input) and ``w_j = down_proj.weight[:, j]`` its *value vector*
``(d_model,)``. Projecting ``w_j`` onto the unembedding (``lm_head.weight @ w_j``, one logit per
vocabulary token) — or onto the token embedding matrix — shows which tokens the neuron promotes
when it fires. For a VLA whose last vocabulary ids are action bins this directly reads "this neuron
pushes the gripper up". (Mechanistic steering of VLAs, CoRL 2025; geva et al. 2022 for LMs.)

* :func:`top_tokens` — the top-``k`` tokens per neuron (strings via a tokenizer or a list of token
  strings, else ids).
* :func:`search_neurons` — rank neurons by how strongly their value vectors promote a set of
  concept tokens (strings or ids): score = mean projection logit of the concept tokens, minus the
  mean over the whole vocabulary (``relative="mean"``, default), divided by its std
  (``"zscore"``), or raw (``None``).
* :func:`save_clusters` / :func:`load_clusters` — ``{name: [{module, neurons: [...]}, …]}`` as YAML
  or JSON (by suffix), meant to be edited by hand; :func:`cluster_intervention` turns a cluster into
  a clamp / scale :class:`~embodied_steer.steering.interventions.Intervention`.

Work is done one module at a time in chunks of neurons, so a 7B model's ``(vocab × d_ff)``
projections are never all in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from embodied_steer.core.errors import ConfigError
from embodied_steer.core.policy import SteerablePolicy
from embodied_steer.steering.addressing import (
    AddressError,
    check_neurons,
    close_matches,
    down_projection,
    input_width,
    policy_modules,
    resolve_modules,
)
from embodied_steer.steering.interventions import Intervention

BASES = ("unembedding", "embedding")
_BASIS_GLOBS = {"unembedding": ("lm_head", "lm_head"), "embedding": ("embed_tokens", "embed_tokens")}


@dataclass
class NeuronHit:
    """One neuron found by :func:`search_neurons`."""

    module: str
    neuron: int
    score: float
    top_tokens: list[Any] = field(default_factory=list)


def _basis_matrix(policy: SteerablePolicy, basis: str | torch.Tensor, module_hint: str) -> tuple[str, torch.Tensor]:
    """``(name, (vocab, d_model) matrix)`` for ``basis``: ``"unembedding"`` / ``"embedding"`` (the
    map entry ending in ``lm_head`` / ``embed_tokens`` of the same tower as ``module_hint``), a
    module name, or a tensor."""
    if isinstance(basis, torch.Tensor):
        if basis.ndim != 2:
            raise AddressError(f"basis matrix must be (vocab, d_model), got {tuple(basis.shape)}")
        return "tensor", basis.detach()
    modules = policy_modules(policy)
    if basis in modules:
        name = basis
    elif basis in BASES:
        suffix = _BASIS_GLOBS[basis][0]
        candidates = [n for n in modules if n.endswith(suffix)]
        if not candidates:
            raise AddressError(f"policy '{policy.info.name}' names no '*{suffix}' module for the {basis} basis; "
                               "pass a module name or a (vocab, d_model) tensor")
        tower = module_hint.split(".", 1)[0]
        same = [n for n in candidates if n.split(".", 1)[0] == tower]
        name = (same or candidates)[0]
    else:
        near = close_matches(str(basis), list(modules))
        raise AddressError(f"basis must be one of {BASES}, a module name or a tensor; got '{basis}'"
                           + (f" (closest modules: {', '.join(near)})" if near else ""))
    weight = getattr(modules[name], "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise AddressError(f"basis module '{name}' has no 2-D weight")
    return name, weight.detach()


def value_vectors(policy: SteerablePolicy, module: str) -> tuple[str, torch.Tensor]:
    """``(down_proj name, (d_ff, d_model))``: row ``j`` is neuron ``j``'s value vector."""
    name, down = down_projection(policy, module)
    return name, down.weight.detach().T


def _projections(policy, module, basis, gain, chunk):
    """Yield ``(neuron_offset, (chunk, vocab) logits)`` for one module's value vectors."""
    down_name, values = value_vectors(policy, module)
    basis_name, matrix = _basis_matrix(policy, basis, module)
    if matrix.shape[1] != values.shape[1]:
        raise AddressError(
            f"value vectors of '{down_name}' have width {values.shape[1]} but the basis '{basis_name}' has "
            f"{matrix.shape[1]} (shape {tuple(matrix.shape)}): project onto the basis of the same tower")
    matrix = matrix.float()
    if gain is not None:
        gain = torch.as_tensor(gain, dtype=torch.float32)
        if gain.shape != (values.shape[1],):
            raise AddressError(f"gain must have shape ({values.shape[1]},), got {tuple(gain.shape)}")
    for start in range(0, values.shape[0], chunk):
        v = values[start:start + chunk].float()
        if gain is not None:
            v = v * gain
        yield down_name, start, v @ matrix.T


def _mlps(policy: SteerablePolicy, modules: str | Sequence[str]) -> list[str]:
    """Matched names, one per distinct down-projection (``x.mlp`` and ``x.mlp.down_proj`` are one)."""
    out, seen = [], set()
    for module in resolve_modules(policy, modules):
        down_name, _ = down_projection(policy, module)
        if down_name not in seen:
            seen.add(down_name)
            out.append(module)
    return out


def _token_namer(tokenizer: Any | None, token_strings: Sequence[str] | None):
    if token_strings is not None:
        return lambda i: token_strings[i] if i < len(token_strings) else i
    if tokenizer is not None:
        return lambda i: tokenizer.convert_ids_to_tokens(int(i))
    return int


def top_tokens(
    policy: SteerablePolicy,
    modules: str | Sequence[str] = "**.mlp",
    *,
    k: int = 10,
    basis: str | torch.Tensor = "unembedding",
    neurons: Sequence[int] | None = None,
    tokenizer: Any | None = None,
    token_strings: Sequence[str] | None = None,
    gain: torch.Tensor | None = None,
    chunk: int = 1024,
) -> dict[str, list[list[tuple[Any, float]]]]:
    """Top-``k`` tokens of every neuron's value vector, per down-projection.

    Args:
        modules: MLPs / down-projections (names or globs; ``"**.mlp"`` = every MLP in the map).
        basis: ``"unembedding"`` (default), ``"embedding"``, a module name or a ``(vocab, d)`` tensor.
        neurons: only these neurons (default: all).
        tokenizer / token_strings: to turn ids into strings (default: ids).
        gain: optional ``(d_model,)`` per-feature scale applied first (e.g. a final RMSNorm weight).

    Returns:
        ``{down_proj name: [[(token, logit), …k], … one list per neuron]}``.
    """
    name_of = _token_namer(tokenizer, token_strings)
    out: dict[str, list[list[tuple[Any, float]]]] = {}
    for module in _mlps(policy, modules):
        down_name, down = down_projection(policy, module)
        wanted = None if neurons is None else set(check_neurons(neurons, input_width(down), down_name).tolist())
        rows: list[list[tuple[Any, float]]] = []
        for _, start, logits in _projections(policy, module, basis, gain, chunk):
            values, idx = logits.topk(min(k, logits.shape[1]), dim=1)
            for r in range(logits.shape[0]):
                if wanted is None or start + r in wanted:
                    rows.append([(name_of(int(i)), float(v)) for v, i in zip(values[r], idx[r])])
        out[down_name] = rows
    return out


def concept_ids(concepts: Iterable[str | int], *, tokenizer: Any | None = None,
                token_strings: Sequence[str] | None = None) -> list[int]:
    """Vocabulary ids of concept tokens given as ids or strings.

    Strings are looked up exactly in ``token_strings`` (also with a leading ``▁`` / ``Ġ`` / space),
    or encoded with ``tokenizer`` (with and without a leading space; every single-token encoding is
    kept, else the first token of the encoding). Unknown strings raise :class:`ConfigError`.
    """
    ids: list[int] = []
    for concept in concepts:
        if isinstance(concept, (int,)) and not isinstance(concept, bool):
            ids.append(int(concept))
            continue
        text = str(concept)
        found: list[int] = []
        if token_strings is not None:
            for variant in (text, "▁" + text, "Ġ" + text, " " + text):
                found += [i for i, t in enumerate(token_strings) if t == variant]
        elif tokenizer is not None:
            encodings = [tokenizer.encode(v, add_special_tokens=False) for v in (text, " " + text)]
            singles = [e[0] for e in encodings if len(e) == 1]
            found = singles or [e[0] for e in encodings if e][:1]
        else:
            raise ConfigError(f"concept '{text}' is a string: pass a tokenizer or token_strings (or use token ids)")
        if not found:
            raise ConfigError(f"concept token '{text}' is not in the vocabulary")
        ids += [i for i in found if i not in ids]
    if not ids:
        raise ConfigError("no concept tokens given")
    return ids


def search_neurons(
    policy: SteerablePolicy,
    concepts: Iterable[str | int],
    modules: str | Sequence[str] = "**.mlp",
    *,
    k: int = 20,
    basis: str | torch.Tensor = "unembedding",
    relative: str | None = "mean",
    tokenizer: Any | None = None,
    token_strings: Sequence[str] | None = None,
    gain: torch.Tensor | None = None,
    top: int = 5,
    chunk: int = 1024,
) -> list[NeuronHit]:
    """The ``k`` neurons (over all ``modules``) whose value vectors most promote ``concepts``.

    Score of neuron ``j``: mean over concept ids of ``basis @ w_j``, minus the vocabulary mean
    (``relative="mean"``), as a z-score over the vocabulary (``"zscore"``) or raw (``None``).
    Each hit carries its ``top`` tokens for inspection.
    """
    if relative not in (None, "mean", "zscore"):
        raise ConfigError(f"relative must be None, 'mean' or 'zscore', got {relative!r}")
    ids = torch.as_tensor(concept_ids(concepts, tokenizer=tokenizer, token_strings=token_strings))
    name_of = _token_namer(tokenizer, token_strings)
    scored: list[tuple[float, str, int, torch.Tensor]] = []
    for module in _mlps(policy, modules):
        for down_name, start, logits in _projections(policy, module, basis, gain, chunk):
            if int(ids.max()) >= logits.shape[1]:
                raise AddressError(f"concept id {int(ids.max())} out of range for a vocabulary of {logits.shape[1]}")
            score = logits[:, ids].mean(dim=1)
            if relative is not None:
                score = score - logits.mean(dim=1)
            if relative == "zscore":
                score = score / logits.std(dim=1).clamp_min(1e-12)
            best = score.topk(min(k, score.shape[0]))
            for s, j in zip(best.values.tolist(), best.indices.tolist()):
                scored.append((s, down_name, start + j, logits[j]))
            scored.sort(key=lambda x: -x[0])
            del scored[k:]
    hits = []
    for s, name, j, row in scored:
        tokens = [(name_of(int(i)), float(v)) for v, i in zip(*row.topk(min(top, row.shape[0])))]
        hits.append(NeuronHit(name, j, s, tokens))
    return hits


def random_neurons(policy: SteerablePolicy, like: Mapping[str, Sequence[int]] | Sequence[NeuronHit], *,
                   seed: int = 0, exclude: bool = True) -> dict[str, list[int]]:
    """A control: as many random neurons per module as ``like`` has (excluding its own by default)."""
    groups = like if isinstance(like, Mapping) else hits_to_cluster(like)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[int]] = {}
    for module, neurons in groups.items():
        name, down = down_projection(policy, module)
        pool = torch.arange(input_width(down))
        if exclude:
            pool = pool[~torch.isin(pool, torch.as_tensor(list(neurons)))]
        out[name] = sorted(pool[torch.randperm(len(pool), generator=gen)[: len(neurons)]].tolist())
    return out


# ----------------------------------------------------------------------------- clusters on disk
def hits_to_cluster(hits: Sequence[NeuronHit]) -> dict[str, list[int]]:
    """``{module: sorted neurons}`` from search hits."""
    out: dict[str, list[int]] = {}
    for h in hits:
        out.setdefault(h.module, [])
        if h.neuron not in out[h.module]:
            out[h.module].append(h.neuron)
    return {m: sorted(n) for m, n in out.items()}


def _entries(cluster: Mapping[str, Sequence[int]] | Sequence[Mapping[str, Any]] | Sequence[NeuronHit]) -> list[dict]:
    if isinstance(cluster, Mapping):
        return [{"module": m, "neurons": [int(i) for i in n]} for m, n in cluster.items()]
    items = list(cluster)
    if items and isinstance(items[0], NeuronHit):
        return _entries(hits_to_cluster(items))
    return [{"module": str(e["module"]), "neurons": [int(i) for i in e["neurons"]],
             **({"note": e["note"]} if "note" in e else {})} for e in items]


def save_clusters(path: str | Path, clusters: Mapping[str, Any], *, merge: bool = True) -> Path:
    """Write ``{name: [{module, neurons: [...]}, …]}`` to ``path`` (``.yaml``/``.yml`` or ``.json``).

    ``clusters`` values may be such lists, ``{module: neurons}`` mappings or search hits. With
    ``merge`` (default) existing clusters in the file are kept unless overwritten by name.
    """
    path = Path(path)
    existing = load_clusters(path) if merge and path.exists() else {}
    existing.update({str(name): _entries(value) for name, value in clusters.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        text = "# neuron clusters: {name: [{module, neurons: [...]}, ...]} — edit freely\n"
        text += yaml.safe_dump(existing, sort_keys=False, default_flow_style=None)
        path.write_text(text)
    elif path.suffix == ".json":
        path.write_text(json.dumps(existing, indent=2))
    else:
        raise ConfigError(f"cluster file must end in .yaml, .yml or .json: {path}")
    return path


def load_clusters(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read a cluster file; validates its structure (not the module names: see :func:`cluster_intervention`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no cluster file at {path}")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
    else:
        data = json.loads(path.read_text())
    if not isinstance(data, Mapping):
        raise ConfigError(f"cluster file {path} must map cluster names to lists of {{module, neurons}}")
    out = {}
    for name, entries in data.items():
        if not isinstance(entries, list) or not all(isinstance(e, Mapping) and "module" in e and "neurons" in e
                                                    for e in entries):
            raise ConfigError(f"cluster '{name}' in {path} must be a list of {{module: ..., neurons: [...]}}")
        out[str(name)] = _entries(entries)
    return out


def cluster_intervention(
    clusters: str | Path | Mapping[str, Any],
    name: str,
    *,
    kind: str = "clamp",
    coefficient: Any = 1.0,
    **where: Any,
) -> Intervention:
    """A clamp / scale intervention on every neuron of cluster ``name`` (from a file or a loaded dict)."""
    if kind not in ("clamp", "scale"):
        raise ConfigError(f"a neuron cluster is clamped or scaled, not '{kind}'")
    data = load_clusters(clusters) if isinstance(clusters, (str, Path)) else dict(clusters)
    if name not in data:
        near = close_matches(name, list(data))
        raise ConfigError(f"no cluster '{name}' (clusters: {', '.join(data) or 'none'}"
                          + (f"; closest: {', '.join(near)}" if near else "") + ")")
    neurons: dict[str, list[int]] = {}
    for entry in _entries(data[name]):
        neurons.setdefault(entry["module"], [])
        neurons[entry["module"]] += [i for i in entry["neurons"] if i not in neurons[entry["module"]]]
    return Intervention(kind, neurons=neurons, coefficient=coefficient, name=where.pop("name", name), **where)


def hits_table(hits: Sequence[NeuronHit]) -> str:
    """A plain-text table of search hits (module, neuron, score, top tokens)."""
    lines = [f"{'module':<36} {'neuron':>6} {'score':>8}  top tokens"]
    for h in hits:
        tokens = ", ".join(f"{t!s}" for t, _ in h.top_tokens)
        lines.append(f"{h.module:<36} {h.neuron:>6} {h.score:>8.3f}  {tokens}")
    return "\n".join(lines)


__all__ = [
    "NeuronHit", "value_vectors", "top_tokens", "concept_ids", "search_neurons", "random_neurons",
    "hits_to_cluster", "save_clusters", "load_clusters", "cluster_intervention", "hits_table",
]
