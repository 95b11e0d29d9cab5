"""Activation steering API on a tiny Llama token policy and the tiny PI0 / PI05 / SmolVLA / diffusion
policies: kinds, addressing, step ranges, coefficients, clean removal and bad input."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from embodied_steer.adapters.tiny_llama import TinyLlamaPolicy
from embodied_steer.core import ConfigError, Observation, UnsupportedIntervention
from embodied_steer.core.steps import current_denoise_step, denoise_step_context
from embodied_steer.steering import (
    PID,
    AddressError,
    Fixed,
    Intervention,
    Schedule,
    ablate,
    add,
    as_coefficient,
    attach,
    clamp,
    hook_counts,
    make_measure,
    resolve_modules,
    rotate,
    scale,
    steer,
    tower_members,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def llama() -> TinyLlamaPolicy:
    return TinyLlamaPolicy(layers=2, width=64, mlp=128, state_dim=3, seed=0)


@pytest.fixture()
def obs() -> Observation:
    return Observation(state=np.array([0.1, -0.2, 0.3], np.float32), instruction="lift the red cube")


def ids(policy, obs):
    return policy.encode(obs)


def logits(policy, input_ids):
    with torch.no_grad():
        return policy.model(input_ids=input_ids).logits[0]


def total_hooks(policy) -> int:
    return sum(a + b for a, b in hook_counts(list(policy.modules().values())).values())


def capture_output(module, fn):
    seen = []
    h = module.register_forward_hook(lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o).detach().clone()))
    try:
        fn()
    finally:
        h.remove()
    return seen


# ----------------------------------------------------------------------------- kinds, numerically
def test_clamp_of_a_neuron_promotes_its_value_vectors_top_token(llama, obs):
    """A last-layer neuron whose value vector (down_proj column), read through the final norm and the
    unembedding, points at token X: clamping it high makes X the argmax at the clamped position."""
    modules = llama.modules()
    down = modules["llm.layers.1.mlp.down_proj"].weight  # (d_model, d_ff)
    gain = modules["llm.norm"].weight
    scores = modules["llm.lm_head"].weight @ (gain[:, None] * down)  # (vocab, d_ff)
    neuron = 5
    token = int(scores[:, neuron].argmax())
    x = ids(llama, obs)
    before = logits(llama, x)[-1]
    with steer(llama, [clamp("llm.layers.1.mlp", [neuron], 200.0, positions="last")]) as handle:
        after = logits(llama, x)
    assert handle.fired() == {"clamp#0@llm.layers.1.mlp.down_proj": 1}
    assert int(after[-1].argmax()) == token
    assert after[-1, token] - after[-1].mean() > before[token] - before.mean()
    torch.testing.assert_close(after[:-1], logits(llama, x)[:-1])  # other positions untouched


def down_input(policy, obs, name, interventions=()):
    """The input of ``name`` during a forward pass, as seen after the interventions' hooks (a probe
    registered after them runs after them)."""
    seen = []
    with steer(policy, list(interventions)):
        probe = policy.modules()[name].register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
        try:
            logits(policy, ids(policy, obs))
        finally:
            probe.remove()
    return seen[0]


def test_clamp_and_scale_set_down_proj_inputs(llama, obs):
    name = "llm.layers.0.mlp.down_proj"
    plain = down_input(llama, obs, name)
    clamped = down_input(llama, obs, name, [clamp("llm.layers.0", [3, 7], 2.5)])  # a layer resolves to its MLP
    assert torch.all(clamped[..., [3, 7]] == 2.5)
    keep = [i for i in range(plain.shape[-1]) if i not in (3, 7)]
    torch.testing.assert_close(clamped[..., keep], plain[..., keep])
    scaled = down_input(llama, obs, name, [scale(name, [3], 0.0), scale("llm.layers.0.mlp**", [7], 3.0)])
    assert torch.all(scaled[..., 3] == 0)
    torch.testing.assert_close(scaled[..., 7], 3.0 * plain[..., 7])
    torch.testing.assert_close(scaled[..., keep], plain[..., keep])
    n = plain.shape[-2]
    for positions, rows in (("last", [n - 1]), ([0, 2], [0, 2]), (slice(1, 3), [1, 2]), (2, [0, 1])):
        other = [i for i in range(n) if i not in rows]
        c = down_input(llama, obs, name, [clamp(name, [3, 7], -1.5, positions=positions)])
        assert torch.all(c[..., rows, :][..., [3, 7]] == -1.5), positions
        torch.testing.assert_close(c[..., other, :], plain[..., other, :])
        sc = down_input(llama, obs, name, [scale(name, [7], 2.0, positions=positions)])
        torch.testing.assert_close(sc[..., rows, 7], 2.0 * plain[..., rows, 7])
        torch.testing.assert_close(sc[..., other, :], plain[..., other, :])


def test_add_vector_scaled_at_module_output(llama, obs):
    x = ids(llama, obs)
    plain = logits(llama, x)
    vec = torch.randn(llama.vocab, generator=torch.Generator().manual_seed(0))
    with steer(llama, [add("llm.lm_head", vec, coefficient=0.5)]):
        steered = logits(llama, x)
    torch.testing.assert_close(steered - plain, 0.5 * vec.expand_as(plain), atol=1e-5, rtol=0)


def test_ablate_zeroes_the_projection(llama, obs):
    x = ids(llama, obs)
    direction = torch.randn(64, generator=torch.Generator().manual_seed(1))
    unit = direction / direction.norm()
    norm = llama.modules()["llm.norm"]
    plain = capture_output(norm, lambda: logits(llama, x))[0]
    with steer(llama, [ablate("llm.norm", direction)]):
        full = capture_output(norm, lambda: logits(llama, x))[0]
    with steer(llama, [ablate("llm.norm", direction, coefficient=0.5)]):
        half = capture_output(norm, lambda: logits(llama, x))[0]
    assert (plain @ unit).abs().min() > 1e-4
    assert (full @ unit).abs().max() < 1e-5
    torch.testing.assert_close(half @ unit, 0.5 * (plain @ unit), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(full - plain, -(plain @ unit)[..., None] * unit, atol=1e-5, rtol=1e-4)


def test_rotation_preserves_norm_and_turns_by_the_angle(llama, obs):
    x = ids(llama, obs)
    g = torch.Generator().manual_seed(2)
    u, v = torch.randn(64, generator=g), torch.randn(64, generator=g)
    norm = llama.modules()["llm.norm"]
    plain = capture_output(norm, lambda: logits(llama, x))[0]
    angle = 0.7
    with steer(llama, [rotate("llm.norm", u, v, angle)]):
        turned = capture_output(norm, lambda: logits(llama, x))[0]
    torch.testing.assert_close(turned.norm(dim=-1), plain.norm(dim=-1), atol=1e-4, rtol=1e-5)
    e1 = u / u.norm()
    e2 = v - (v @ e1) * e1
    e2 = e2 / e2.norm()
    a0, b0 = plain @ e1, plain @ e2
    a1, b1 = turned @ e1, turned @ e2
    turn = torch.remainder(torch.atan2(b1, a1) - torch.atan2(b0, a0) + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(turn, torch.full_like(a0, angle), atol=1e-4, rtol=0)
    rest = lambda h: h - (h @ e1)[..., None] * e1 - (h @ e2)[..., None] * e2  # noqa: E731
    torch.testing.assert_close(rest(turned), rest(plain), atol=1e-5, rtol=1e-4)


def test_positions_all_last_prefix_slice_list(llama, obs):
    x = ids(llama, obs)
    n = x.shape[1]
    plain = logits(llama, x)
    vec = torch.ones(llama.vocab)

    def changed(positions):
        with steer(llama, [add("llm.lm_head", vec, positions=positions)]):
            out = logits(llama, x)
        return [i for i in range(n) if not torch.allclose(out[i], plain[i])]

    assert changed("all") == list(range(n))
    assert changed("last") == [n - 1]
    assert changed("prefix") == list(range(n))
    assert changed(3) == [0, 1, 2]
    assert changed(slice(2, 5)) == [2, 3, 4]
    assert changed([1, -1]) == [1, n - 1]
    assert changed("prefix_last") == [n - 1]
    # prefix / prefix_last: single-token (KV-cache decoding) forwards are left alone
    for positions in ("prefix", "prefix_last"):
        with steer(llama, [add("llm.lm_head", vec, positions=positions)]) as handle:
            llama.act(obs)
        assert handle.fired()["add#0@llm.lm_head"] == 1, positions  # the prompt pass only, not the action tokens
    with steer(llama, [add("llm.lm_head", vec, positions="last")]) as handle:
        llama.act(obs)
    assert handle.fired()["add#0@llm.lm_head"] > 1  # "last" also edits every decoding step


def test_one_hook_per_module_applies_its_interventions_in_order(llama, obs):
    """Several interventions on one module share one hook, applied in the order given (a clamp then
    a scale of the same neuron multiplies the clamped value; the reverse order overwrites)."""
    name = "llm.layers.0.mlp.down_proj"
    module = llama.modules()[name]
    with steer(llama, [clamp(name, [3], 2.0), scale("llm.layers.0.mlp", [3, 5], 3.0),
                       clamp("llm.layers.1.mlp", [0], 1.0)]) as handle:
        assert len(module._forward_pre_hooks) == 1  # noqa: SLF001
        assert total_hooks(llama) == 2
        assert len(handle.sites) == 3
    plain = down_input(llama, obs, name)
    both = down_input(llama, obs, name, [clamp(name, [3], 2.0), scale(name, [3, 5], 3.0)])
    assert torch.all(both[..., 3] == 6.0)
    torch.testing.assert_close(both[..., 5], 3.0 * plain[..., 5])
    reverse = down_input(llama, obs, name, [scale(name, [3, 5], 3.0), clamp(name, [3], 2.0)])
    assert torch.all(reverse[..., 3] == 2.0)


def test_edits_keep_autograd_intact(llama, obs):
    """With gradients on, the clamp edits a copy (the original activation autograd saved is kept)."""
    x = ids(llama, obs)
    name = "llm.layers.0.mlp.down_proj"
    with steer(llama, [clamp(name, [3], 0.5)]):
        out = llama.model(input_ids=x).logits
        out.sum().backward()
    grad = llama.modules()[name].weight.grad
    assert grad is not None and torch.isfinite(grad).all()
    llama.model.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- removal
def test_context_manager_and_handles_leave_no_hooks(llama, obs):
    before = hook_counts(llama.model)
    with steer(llama, [clamp("llm.layers.*.mlp", [0, 1], 1.0), add("llm.layers.*", torch.zeros(64))]) as handle:
        assert handle.active and total_hooks(llama) == 4
        llama.act(obs)
    assert not handle.active and hook_counts(llama.model) == before
    handle = attach(llama, [ablate("llm.norm", torch.ones(64))])
    assert total_hooks(llama) == 1
    handle.remove()
    handle.remove()  # idempotent
    assert hook_counts(llama.model) == before


def test_exception_inside_hooked_forward_leaves_no_hook(llama, obs):
    before = hook_counts(llama.model)
    with pytest.raises(IndexError):
        with steer(llama, [clamp("llm.layers.*.mlp", [0], 1.0), rotate("llm.norm", torch.ones(64), torch.arange(64.0))]):
            llama.model(input_ids=torch.tensor([[llama.vocab + 5]]))  # out-of-range token id
    assert hook_counts(llama.model) == before
    # a width only checkable at run time (decoder-layer output) fails inside the forward pass ...
    handle = attach(llama, [add("llm.layers.0", torch.zeros(10))])
    with pytest.raises(AddressError, match=r"llm.layers.0.*shape \(10,\) but the output has 64 features"):
        llama.act(obs)
    # ... and the persistent handle removes itself rather than leave a broken hook behind
    assert not handle.active and hook_counts(llama.model) == before


def test_failed_attach_registers_nothing(llama):
    before = hook_counts(llama.model)
    with pytest.raises(AddressError):
        attach(llama, [clamp("llm.layers.0.mlp", [1], 1.0), clamp("llm.layers.1.mlp", [999], 1.0)])
    assert hook_counts(llama.model) == before


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make, match", [
    (lambda: clamp("llm.layers.0.mpl", [1], 1.0), r"no module named 'llm.layers.0.mpl'.*closest: llm.layers.0.mlp"),
    (lambda: clamp("vlm.layers.*.mlp", [1], 1.0), r"no module named 'vlm.layers.\*.mlp'"),
    (lambda: clamp("llm.layers.0.mlp", [1, 128], 1.0), r"\[128\] out of range for module 'llm.layers.0.mlp.down_proj', which has 128 neurons"),
    (lambda: clamp("llm.layers.0.mlp", [-1], 1.0), r"out of range"),
    (lambda: clamp("llm.norm", [1], 1.0), r"'llm.norm'.*not an MLP down-projection"),
    (lambda: add("llm.layers.0.mlp", torch.zeros(10)), r"'llm.layers.0.mlp' has shape \(10,\), expected \(64,\)"),
    (lambda: add("llm.lm_head", torch.zeros(2, 640)), r"must be 1-D"),
    (lambda: ablate("llm.norm", torch.zeros(64)), r"zero vector"),
    (lambda: rotate("llm.norm", torch.ones(64), 2 * torch.ones(64), 0.1), r"parallel"),
    (lambda: add("llm.norm", torch.full((64,), float("nan"))), r"NaN"),
    (lambda: clamp("llm.layers.0.mlp", [1], float("nan")), r"finite"),
    (lambda: clamp("llm.layers.0.mlp", [1], 1.0, tower="vision"), r"tower 'vision'"),
    (lambda: clamp("llm.layers.0.mlp", [1], 1.0, tower="nope"), r"unknown tower"),
    (lambda: Intervention("twist", "llm.norm"), r"unknown intervention kind"),
    (lambda: add("llm.norm", torch.ones(64), positions="middle"), r"positions must be"),
])
def test_bad_input_clear_errors(llama, make, match):
    before = hook_counts(llama.model)
    with pytest.raises(ConfigError, match=match):
        attach(llama, [make()])
    assert hook_counts(llama.model) == before


def test_policy_without_activations_is_refused(obs):
    from embodied_steer.experts.scripted import LiftExpert  # a policy with no modules

    with pytest.raises(UnsupportedIntervention, match="activations"):
        attach(LiftExpert(), [clamp("llm.layers.0.mlp", [0], 1.0)])


# ----------------------------------------------------------------------------- addressing
def test_layer_and_tower_filters(llama):
    assert resolve_modules(llama, "llm.layers.*") == ["llm.layers.0", "llm.layers.1"]  # * stays in a segment
    assert len(resolve_modules(llama, "llm.layers.**")) == 8
    assert resolve_modules(llama, "llm.layers.[1].mlp**") == ["llm.layers.1.mlp", "llm.layers.1.mlp.down_proj"]
    assert resolve_modules(llama, "llm.layers.*.mlp", layers=[1]) == ["llm.layers.1.mlp"]
    assert resolve_modules(llama, ["llm.layers.1.mlp", "llm.layers.0.mlp"]) == ["llm.layers.0.mlp", "llm.layers.1.mlp"]
    assert set(tower_members(llama, "llm")) == set(llama.modules())


def test_per_module_neuron_mapping(llama, obs):
    with steer(llama, [Intervention("clamp", neurons={"llm.layers.0.mlp": [1], "llm.layers.1.mlp.down_proj": [2, 3]},
                                    coefficient=4.0)]) as handle:
        llama.act(obs)
    rows = {r["module"]: r["neurons"] for r in handle.describe()}
    assert rows == {"llm.layers.0.mlp.down_proj": [1], "llm.layers.1.mlp.down_proj": [2, 3]}


# ----------------------------------------------------------------------------- step context
def test_step_context_nests_and_resets():
    assert current_denoise_step() is None
    with denoise_step_context(2, 10, 0.8):
        assert current_denoise_step().index == 2
        with denoise_step_context(3, 10, 0.7):
            assert current_denoise_step().index == 3
        assert current_denoise_step().index == 2
    assert current_denoise_step() is None


# ----------------------------------------------------------------------------- coefficients
def test_fixed_and_schedules():
    assert as_coefficient(3).value == 3.0 and isinstance(as_coefficient(3), Fixed)
    lin = Schedule("linear", start=0.0, end=10.0, length=5)
    assert [lin.on_observation(None) for _ in range(7)] == [0, 2, 4, 6, 8, 10, 10]
    cos = Schedule("cosine", start=0.0, end=1.0, length=4)
    values = [cos.on_observation(None) for _ in range(5)]
    assert values[0] == 0 and values[-1] == pytest.approx(1) and values[2] == pytest.approx(0.5)
    pw = as_coefficient({"kind": "schedule", "schedule": "piecewise", "points": [[0, 1.0], [3, 5.0]]})
    assert [pw.on_observation(None) for _ in range(5)] == [1, 1, 1, 5, 5]
    pw.reset()
    assert pw.on_observation(None) == 1
    timed = Schedule("linear", start=0, end=1, length=2.0, unit="time")
    assert timed.on_observation(Observation(timestamp=1.0)) == 0.5
    with pytest.raises(ConfigError):
        Schedule("linear", start=float("nan"))
    with pytest.raises(ConfigError):
        as_coefficient({"kind": "schedule", "schedule": "function", "fn": lambda x: float("nan")}).on_observation(None)


def test_pid_drives_a_toy_plant_to_target_with_limits_and_anti_windup():
    """Plant: y' = 0.5 u - 0.2 (a lift that sinks without push); the PID holds y at 1.0."""
    pid = PID("state[0]", 1.0, kp=0.8, ki=0.6, kd=0.05, limits=(-2.0, 2.0), dt=0.1)
    y, history = 0.0, []
    for k in range(400):
        u = pid.on_observation(Observation(state=np.array([y], np.float32), timestamp=0.1 * k))
        assert -2.0 <= u <= 2.0
        y += 0.1 * (0.5 * u - 0.2)
        history.append(y)
    assert abs(history[-1] - 1.0) < 0.01
    # windup: a long saturated stretch must not leave a huge integral behind
    pid.reset()
    for k in range(500):  # unreachable target: output pinned at the upper limit
        u = pid.on_observation(Observation(state=np.array([-50.0], np.float32), timestamp=0.1 * k))
    assert u == 2.0 and abs(pid.ki * pid.integral) <= 2.0 + 1e-9
    u = pid.on_observation(Observation(state=np.array([3.0], np.float32), timestamp=50.0))  # overshoot
    assert u < 2.0  # leaves saturation at once instead of unwinding a large integral


def test_pid_sign_and_measures():
    lowering = PID("state[0]", 0.0, kp=1.0, sign=-1)
    assert lowering.on_observation(Observation(state=np.array([1.0], np.float32))) == 1.0  # too high: push harder
    speed = make_measure("speed(state[0:2])")
    assert speed(Observation(state=np.array([0.0, 0.0], np.float32), timestamp=0.0)) == 0.0
    assert speed(Observation(state=np.array([3.0, 4.0], np.float32), timestamp=0.5)) == pytest.approx(10.0)
    with pytest.raises(ConfigError):
        PID("state[0]", 1.0, limits=(0.0, 1.0), bias=2.0)
    with pytest.raises(ConfigError):
        make_measure("elbow")


def test_handle_begins_calls_and_resets_per_episode(llama, obs):
    import dataclasses

    sched = Schedule("linear", start=0.0, end=3.0, length=3)
    with steer(llama, [clamp("llm.layers.0.mlp", [1], sched, name="up")]) as handle:
        got = [handle.begin_call(dataclasses.replace(obs, timestamp=0.05 * k))["up"] for k in range(3)]
        assert got == [0.0, 1.0, 2.0]
        assert handle.begin_call(dataclasses.replace(obs, timestamp=0.0))["up"] == 0.0  # new episode


def test_gated_coefficient_switches_the_intervention_by_phase(llama, obs):
    """A gated coefficient applies its intervention only while its conditions hold; while closed
    the activations are untouched (not clamped to some 'off' value)."""
    import dataclasses

    from embodied_steer.steering import Condition, Gated

    name = "llm.layers.0.mlp.down_proj"
    plain = down_input(llama, obs, name)
    gate = Gated(5.0, ["state[2] > 0.5", "norm(state[0:2]) < 1"])
    with steer(llama, [clamp(name, [4], gate, name="up")]) as handle:
        seen = []
        probe = llama.modules()[name].register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
        try:
            for k, z in enumerate((0.3, 0.9, 0.2)):
                handle.begin_call(dataclasses.replace(obs, state=np.array([0.1, -0.2, z], np.float32),
                                                      timestamp=0.05 * k))
                logits(llama, ids(llama, obs))
        finally:
            probe.remove()
        assert handle.fired()["up@" + name] == 1
    torch.testing.assert_close(seen[0], plain)  # closed: untouched
    assert torch.all(seen[1][..., 4] == 5.0)  # open
    torch.testing.assert_close(seen[2], plain)  # closed again (no latch)
    latched = Gated(Fixed(2.0), "state[2] > 0.5", latch=True)
    states = [np.array([0, 0, z], np.float32) for z in (0.3, 0.9, 0.2)]
    assert [latched.on_observation(dataclasses.replace(obs, state=s)) and latched.active for s in states] == \
        [False, True, True]
    latched.reset()
    assert not latched.active
    spec = as_coefficient({"kind": "gated", "inner": 3.0, "when": ["env_state[0] <= 0"]})
    assert isinstance(spec, Gated) and spec.to_dict()["conditions"] == ["env_state[0]<=0"]
    assert Condition.parse({"measure": "state[1]", "op": "<", "threshold": 0.0})(obs)
    assert make_measure("norm(state[0:2])")(obs) == pytest.approx(math.hypot(0.1, 0.2), rel=1e-6)


@pytest.mark.parametrize("spec, match", [
    ("state[2] = 1", "cannot parse gate condition"),
    ("state[2] < high", "threshold of condition"),
    ("pose[2] < 1", "unknown observation field 'pose'"),
    ("norm(state[a:b]) < 1", "cannot parse the indices"),
])
def test_gate_conditions_bad_input(spec, match):
    from embodied_steer.steering import Gated

    with pytest.raises(ConfigError, match=match):
        Gated(1.0, [spec])
    with pytest.raises(ConfigError, match="at least one condition"):
        Gated(1.0, [])


# ============================================================================= flow VLAs and diffusion
FLOW_STEPS = 5


@pytest.fixture(scope="module", params=("pi0", "pi05", "smolvla"))
def flow(request, tmp_path_factory):
    from embodied_steer.adapters import tiny

    folder = tmp_path_factory.mktemp(f"steer_{request.param}")
    return tiny.TINY_BUILDERS[request.param](folder, chunk_size=8, n_action_steps=4, num_steps=FLOW_STEPS)


@pytest.fixture()
def flow_obs():
    from embodied_steer.adapters import tiny

    return tiny.tiny_observation(seed=5)


def flow_actions(policy, obs):
    noise = policy.initial_noise(1, torch.Generator().manual_seed(0))
    return policy.act(obs, noise=noise).actions


def test_flow_towers_and_module_map(flow):
    expert = tower_members(flow, "expert")
    assert "expert.layers.0.mlp.down_proj" in expert and not any(n.startswith("vlm") for n in expert)
    prefix = tower_members(flow, "prefix")
    assert "vlm.layers.0.mlp.down_proj" in prefix and "vision" in prefix and "expert.layers.0.mlp" not in prefix
    assert {"vlm.embed_tokens", "vlm.lm_head"} <= set(flow.modules())
    assert resolve_modules(flow, "**.mlp.down_proj", tower="expert") == [
        f"expert.layers.{i}.mlp.down_proj" for i in range(2)]


def test_flow_clamp_changes_actions_and_leaves_no_hooks(flow, flow_obs):
    roots = [flow.policy]
    before = hook_counts(roots)
    plain = flow_actions(flow, flow_obs)
    with steer(flow, [clamp("vlm.layers.*.mlp", [0, 1, 2], 5.0), clamp("expert.layers.*.mlp", [0, 1], -3.0)]) as h:
        steered = flow_actions(flow, flow_obs)
    fired = h.fired()
    assert fired["clamp#0@vlm.layers.0.mlp.down_proj"] == 1  # VLM prefix: once per chunk
    assert fired["clamp#1@expert.layers.1.mlp.down_proj"] == FLOW_STEPS  # expert: once per flow step
    assert np.abs(steered - plain).max() > 1e-4
    assert hook_counts(roots) == before
    np.testing.assert_array_equal(flow_actions(flow, flow_obs), plain)


def test_flow_step_range_fires_only_in_chosen_steps(flow, flow_obs):
    seen = []
    down = flow.modules()["expert.layers.0.mlp.down_proj"]
    plain = flow_actions(flow, flow_obs)
    with steer(flow, [clamp("expert.layers.0.mlp", [0, 1, 2, 3], 4.0, steps=(1, 3))]) as h:
        # probe registered after the steering hook: sees the steered input, and the step index
        probe = down.register_forward_pre_hook(
            lambda m, a: seen.append((current_denoise_step().index, bool((a[0][..., :4] == 4.0).all()))))
        try:
            late = flow_actions(flow, flow_obs)
        finally:
            probe.remove()
    assert seen == [(0, False), (1, True), (2, True), (3, False), (4, False)]
    assert list(h.fired().values()) == [2]
    assert np.abs(late - plain).max() > 1e-5
    with pytest.raises(AddressError, match="once per chunk.*step range"):
        attach(flow, [clamp("vlm.layers.0.mlp", [0], 1.0, steps=(0, 2))])


def test_flow_add_on_expert_output_at_last_positions(flow, flow_obs):
    width = flow.modules()["expert.layers.1.mlp.down_proj"].out_features
    plain = flow_actions(flow, flow_obs)
    with steer(flow, [add("expert.layers.1.mlp", torch.ones(width), 2.0, positions="last", steps="3:")]) as h:
        steered = flow_actions(flow, flow_obs)
    assert list(h.fired().values()) == [FLOW_STEPS - 3]
    assert np.abs(steered - plain).max() > 1e-5


def test_diffusion_unet_blocks_per_denoising_step():
    from helpers import lift_like_observation, tiny_diffusion_policy

    policy = tiny_diffusion_policy()
    schedule = policy.module_schedule()
    assert schedule["unet.down_modules.0.0"] == "step"
    obs = lift_like_observation()
    noise = torch.randn((1, *policy.noise_spec.shape), generator=torch.Generator().manual_seed(0))
    plain = policy.act(obs, noise=noise).actions
    before = hook_counts(policy.policy)
    channels = 16  # first down block's output channels (down_dims[0])
    with steer(policy, [add("unet.down_modules.0.0", torch.ones(channels), 1.0, steps=(0, 2))]) as h:
        steered = policy.act(obs, noise=noise).actions
    assert list(h.fired().values()) == [2]
    assert np.abs(steered - plain).max() > 1e-5
    assert hook_counts(policy.policy) == before
    with pytest.raises(AddressError, match=r"shape \(5,\) but the output has 16 features.*expected shape \(16,\)"):
        with steer(policy, [add("unet.down_modules.0.0", torch.ones(5), 1.0)]):
            policy.act(obs, noise=noise)
    assert hook_counts(policy.policy) == before


# ============================================================================= discovery
def test_vocabulary_projection_top_tokens_and_concept_search(llama, tmp_path):
    from embodied_steer.steering.discovery import (
        cluster_intervention,
        load_clusters,
        random_neurons,
        save_clusters,
        search_neurons,
        top_tokens,
    )

    strings = llama.token_strings()
    tops = top_tokens(llama, "llm.layers.*.mlp", k=3, token_strings=strings)
    assert list(tops) == ["llm.layers.0.mlp.down_proj", "llm.layers.1.mlp.down_proj"]
    assert len(tops["llm.layers.1.mlp.down_proj"]) == 128 and len(tops["llm.layers.1.mlp.down_proj"][0]) == 3
    w_u = llama.modules()["llm.lm_head"].weight
    w = llama.modules()["llm.layers.1.mlp.down_proj"].weight
    expect = int((w_u @ w[:, 9]).argmax())
    assert tops["llm.layers.1.mlp.down_proj"][9][0][0] == strings[expect]
    emb = top_tokens(llama, "llm.layers.0.mlp", k=1, basis="embedding", neurons=[4])
    w_e, w0 = llama.modules()["llm.embed_tokens"].weight, llama.modules()["llm.layers.0.mlp.down_proj"].weight
    assert emb["llm.layers.0.mlp.down_proj"][0][0][0] == int((w_e @ w0[:, 4]).argmax())  # ids without strings

    upper = [f"<bin_{b}>" for b in range(192, 256)]  # "upward" action bins
    hits = search_neurons(llama, upper, "llm.layers.*.mlp", k=6, token_strings=strings)
    assert len(hits) == 6 and hits[0].score >= hits[-1].score
    ids = [strings.index(t) for t in upper]
    best = hits[0]
    col = llama.modules()[best.module].weight[:, best.neuron]
    logits = (w_u @ col).detach()
    assert best.score == pytest.approx(float(logits[ids].mean() - logits.mean()), rel=1e-4)
    by_id = search_neurons(llama, ids, "llm.layers.*.mlp", k=6)
    assert [(h.module, h.neuron) for h in by_id] == [(h.module, h.neuron) for h in hits]
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        search_neurons(llama, ["<bin_999>"], token_strings=strings)

    path = save_clusters(tmp_path / "clusters.yaml", {"up": hits})
    save_clusters(path, {"ctrl": random_neurons(llama, hits, seed=1)})
    loaded = load_clusters(path)
    assert set(loaded) == {"up", "ctrl"}
    assert sum(len(e["neurons"]) for e in loaded["ctrl"]) == 6
    text = path.read_text().replace(f"neurons: [{loaded['up'][0]['neurons'][0]}", "neurons: [0")  # hand edit
    path.write_text(text)
    inter = cluster_intervention(path, "up", coefficient=10.0, positions="last")
    with steer(llama, [inter]) as handle:
        llama.act(Observation(instruction="lift"))
    assert sum(handle.fired().values()) > 0
    json_path = save_clusters(tmp_path / "c.json", {"up": {"llm.layers.0.mlp": [1, 2]}})
    assert load_clusters(json_path) == {"up": [{"module": "llm.layers.0.mlp", "neurons": [1, 2]}]}
    with pytest.raises(ConfigError, match="no cluster 'uq'.*closest: up"):
        cluster_intervention(json_path, "uq")


def test_value_vector_width_must_match_basis(flow):
    from embodied_steer.steering.discovery import top_tokens

    with pytest.raises(AddressError, match=r"expert.layers.0.mlp.down_proj.*width \d+ but the basis .vlm.lm_head. has 64"):
        top_tokens(flow, "expert.layers.0.mlp")
    assert len(top_tokens(flow, "vlm.layers.0.mlp", k=2)["vlm.layers.0.mlp.down_proj"]) == 128


# ============================================================================= directions
def test_mean_difference_east_weights_and_layer_selection(tmp_path):
    from embodied_steer.steering.directions import (
        action_entropy,
        entropy_weighted_difference,
        entropy_weighted_direction,
        load_directions,
        mean_difference,
        save_directions,
        select_layers,
    )

    g = torch.Generator().manual_seed(0)
    d = torch.zeros(8)
    d[0] = 1.0
    pos = {"a": torch.randn(50, 8, generator=g) + 2 * d, "b": torch.randn(50, 8, generator=g) + 5 * d}
    neg = {"a": torch.randn(40, 8, generator=g) - 2 * d, "b": torch.randn(40, 8, generator=g) + 3 * d}
    diff = mean_difference(pos, neg)
    torch.testing.assert_close(diff["a"], pos["a"].mean(0) - neg["a"].mean(0))
    assert diff["a"][0] > 3 and diff["b"][0] > 1
    kept, report = select_layers(diff, pos, neg)
    assert list(kept) == ["a"]  # in "b" both classes sit on the same side of the origin
    assert [r.kept for r in report] == [True, False] and report[0].pos_projection > 0 > report[0].neg_projection

    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]])
    h = action_entropy(logits)
    assert h[0] == pytest.approx(math.log(4)) and h[1] < 0.01
    assert action_entropy(torch.zeros(3, 7, 4)).shape == (3,)
    # weights single out samples: all weight on sample 0 of each class
    wp = torch.zeros(50)
    wp[0] = 1
    wn = torch.zeros(40)
    wn[0] = 1
    east = entropy_weighted_difference(pos, neg, wp, wn)
    torch.testing.assert_close(east["a"], pos["a"][0] - neg["a"][0])
    uniform = entropy_weighted_difference(pos, neg, torch.ones(50), torch.ones(40))
    torch.testing.assert_close(uniform["a"], diff["a"])
    single = entropy_weighted_direction({"a": pos["a"]}, torch.ones(50))
    assert single["a"].abs().max() < 1e-5  # uniform weights: centred mean is zero
    with pytest.raises(ConfigError, match="weights"):
        entropy_weighted_difference(pos, neg, torch.ones(3), torch.ones(40))
    path = save_directions(tmp_path / "dirs.safetensors", kept)
    torch.testing.assert_close(load_directions(path, ["a"])["a"], kept["a"])


def test_directions_from_recorded_activations_steer_the_llama(llama):
    from embodied_steer.steering.capture import record_activations
    from embodied_steer.steering.directions import mean_difference

    up = [Observation(instruction=f"move up {i}") for i in range(4)]
    down = [Observation(instruction=f"go down {i}") for i in range(4)]
    pos = record_activations(llama, up, "llm.layers.*")
    neg = record_activations(llama, down, "llm.layers.*")
    assert pos["llm.layers.0"].shape == (4, 64)
    dirs = mean_difference(pos, neg)
    with steer(llama, [add(name, vec, 1.0, positions="last") for name, vec in dirs.items()]) as h:
        llama.act(down[0])
    assert all(v > 0 for v in h.fired().values())


# ============================================================================= capture
def test_capture_to_disk_per_layer_and_step(flow, flow_obs, tmp_path):
    from embodied_steer.steering.capture import capture, read_capture

    before = hook_counts([flow.policy])
    with capture(flow, ["vlm.layers.0.mlp", "expert.layers.*.mlp.down_proj"], tmp_path / "acts",
                 what="input", max_buffer_bytes=1 << 30) as cap:
        flow_actions(flow, flow_obs)
        cap.begin_call()
        flow_actions(flow, flow_obs)
    assert hook_counts([flow.policy]) == before
    entries = [e for e, _ in read_capture(tmp_path / "acts")]
    expert = [e for e in entries if e["module"] == "expert.layers.1.mlp.down_proj"]
    assert [(e["call"], e["step"]) for e in expert] == [(c, s) for c in (0, 1) for s in range(FLOW_STEPS)]
    vlm = [e for e in entries if e["module"] == "vlm.layers.0.mlp"]
    assert [(e["call"], e["step"]) for e in vlm] == [(0, None), (1, None)]
    # one shard per (call, step): the buffer never held more than one step
    assert len({e["file"] for e in entries}) == 2 * (FLOW_STEPS + 1)
    for entry, tensor in read_capture(tmp_path / "acts", module="expert.layers.0.mlp.down_proj", step=2):
        assert list(tensor.shape) == entry["shape"] and entry["dtype"] == "float32"
        width = flow.modules()["expert.layers.0.mlp.down_proj"].in_features
        assert tensor.shape[-1] == width
    assert cap.peak_buffer_bytes <= cap.bytes_written
    with pytest.raises(ConfigError, match="already holds a capture"):
        capture(flow, "vlm.layers.0.mlp", tmp_path / "acts")


# ============================================================================= command line
SHIPPED = __import__("pathlib").Path(__file__).resolve().parents[1] / "checkpoints" / "lift_diffusion"


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint missing")
def test_cli_steered_eval_runs_and_logs_coefficients(tmp_path, capsys):
    import json

    from safetensors.torch import save_file

    from embodied_steer.cli import main

    save_file({"vector": torch.full((7,), 0.5)}, str(tmp_path / "shift.safetensors"))
    out = tmp_path / "run"
    rc = main(["eval", "policy=lift_diffusion", "steer=eps_shift_late", f"steer.vector_file={tmp_path}/shift.safetensors",
               "episodes=1", "env.horizon=24", f"output_dir={out}", "torch_threads=1"])
    assert rc == 0, capsys.readouterr().err
    hooks = json.loads((out / "steer.json").read_text())["hooks"]
    assert hooks[0]["module"] == "unet.final_conv" and hooks[0]["steps"] == [5, None]
    calls = [json.loads(line) for line in (out / "steer.jsonl").read_text().splitlines()]
    assert len(calls) == 24 // 8 and [c["coefficients"]["add#0"] for c in calls] == [0.0, 0.1, 0.2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extra"]["steer"][0]["kind"] == "add"


def test_cli_steer_errors_up_front(tmp_path, capsys):
    from embodied_steer.cli import main

    assert main(["eval", "policy=scripted_lift", "steer=clamp_neurons", "steer.neurons=[1]",
                 f"output_dir={tmp_path}/a"]) == 2
    assert "steer=clamp_neurons needs the 'activations' intervention point" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main(["eval", "steer=no_such_steer", f"output_dir={tmp_path}/b"]) == 2
    assert "available steer options" in capsys.readouterr().err


def test_steer_config_parsing(llama, tmp_path):
    from embodied_steer.steering.config import interventions_from_config
    from embodied_steer.steering.directions import save_directions
    from embodied_steer.steering.discovery import save_clusters

    save_clusters(tmp_path / "c.yaml", {"up": {"llm.layers.1.mlp": [3, 4]}})
    save_directions(tmp_path / "d.safetensors", {"llm.layers.0": torch.ones(64), "llm.layers.1": -torch.ones(64)})
    save_directions(tmp_path / "u.safetensors", {"u": torch.arange(64.0)})
    save_directions(tmp_path / "v.safetensors", {"v": torch.ones(64)})
    cfg = {"name": "t", "interventions": [
        {"kind": "clamp", "cluster_file": "c.yaml", "cluster": "up",
         "coefficient": {"kind": "pid", "measure": "state[2]", "target": 0.3, "kp": 2.0, "limits": [0, 5]}},
        {"kind": "scale", "modules": "llm.layers.0.mlp", "neurons": [1], "coefficient": 2.0, "positions": "last"},
        {"kind": "add", "modules": "llm.layers.*", "vector_file": "d.safetensors",
         "coefficient": {"kind": "schedule", "schedule": "cosine", "start": 0, "end": 1, "length": 4}},
        {"kind": "ablate", "modules": "llm.norm", "vector": [1.0] * 64},
        {"kind": "rotate", "modules": "llm.norm", "u_file": "u.safetensors", "v_file": "v.safetensors",
         "coefficient": 0.3, "positions": [0, 1]},
    ]}
    interventions = interventions_from_config(cfg, base_dir=tmp_path)
    with steer(llama, interventions) as handle:
        values = handle.begin_call(Observation(state=np.zeros(3, np.float32), instruction="x"))
        llama.act(Observation(state=np.zeros(3, np.float32), instruction="x"))
    assert values["up"] == pytest.approx(0.6)
    assert all(v > 0 for v in handle.fired().values())
    with pytest.raises(ConfigError, match="unknown keys \\['modlues'\\]"):
        interventions_from_config({"interventions": [{"kind": "clamp", "modlues": "x"}]})
    with pytest.raises(ConfigError, match="no cluster file"):
        interventions_from_config({"interventions": [{"kind": "clamp", "cluster_file": "nope.yaml", "cluster": "a"}]})
