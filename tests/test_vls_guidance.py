"""Reward-guided sampling (VLS): guidance direction, diversity, FK resampling, schedule, fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embodied_steer.core.errors import ConfigError, UnsupportedIntervention
from embodied_steer.core.policy import DenoiseStep, StepEdit
from embodied_steer.core.types import Observation
from embodied_steer.vls.guidance import GuidanceConfig, GuidedSampler, SamplerLayout
from embodied_steer.vls.particles import FeynmanKac, effective_sample_size, mean_pairwise_kernel, repulsion
from embodied_steer.vls.schedule import GuidanceSchedule, StageTracker
from embodied_steer.vls.trajectory import AbsolutePositionMap
from helpers import lift_like_observation, tiny_diffusion_policy


def _keypoints(obs: Observation) -> torch.Tensor:
    return torch.zeros(1, 3)


def _push_x(stage: int, keypoints: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    """Reward: the mean first coordinate of the trajectory (ascent = larger action 0)."""
    return trajectory[..., 0].mean(dim=1)


def _sampler(reward=_push_x, **config) -> GuidedSampler:
    # Absolute map on action dims 0..2: the reward sees the actions themselves.
    return GuidedSampler(reward, _keypoints, AbsolutePositionMap(), [0, 1, 2], GuidanceConfig(**config))


def _obs(seed: int = 0) -> Observation:
    return lift_like_observation(np.random.default_rng(seed))


def _act(policy, guide, obs, seed=0) -> np.ndarray:
    policy.reset(seed=seed)
    return guide.act(policy, obs).actions


# ------------------------------------------------------------------------------- diffusion direction
@pytest.fixture(scope="module")
def tiny_diffusion():
    return tiny_diffusion_policy()


@pytest.mark.parametrize("scale", [0.3, 1.0, 5.0, 50.0])
def test_diffusion_guidance_moves_samples_along_the_reward(tiny_diffusion, scale):
    obs = _obs()
    base = _act(tiny_diffusion, _sampler(scale=0.0, num_particles=4, select="first"), obs)
    guided = _act(tiny_diffusion, _sampler(scale=scale, num_particles=4, select="first"), obs)
    assert guided[:, 0].mean() > base[:, 0].mean() + 0.05
    # Only the rewarded dimension is pushed on purpose; the others are not driven to a bound.
    assert np.abs(guided[:, 3:]).max() <= 1.0 + 1e-5


def test_plain_epsilon_guidance_reverses_under_clipping_and_clip_aware_does_not(tiny_diffusion):
    """The measured DDIM pitfall: clip_sample=True + large ε guidance pushes the wrong way."""
    obs = _obs()
    base = _act(tiny_diffusion, _sampler(scale=0.0, num_particles=4, select="first"), obs)[:, 0].mean()
    naive = _act(tiny_diffusion, _sampler(scale=50.0, num_particles=4, select="first", clip_aware=False), obs)
    aware = _act(tiny_diffusion, _sampler(scale=50.0, num_particles=4, select="first"), obs)
    assert naive[:, 0].mean() < base  # the pitfall exists for this sampler ...
    assert aware[:, 0].mean() > base  # ... and the clip-aware update avoids it


def test_guidance_restricted_to_dims_leaves_other_dims_alone(tiny_diffusion):
    obs = _obs()
    # Reward on dimension 0 only, but guidance allowed only on dimension 1: no push on dim 0.
    base = _act(tiny_diffusion, _sampler(scale=0.0, num_particles=2, select="first"), obs)
    masked = _act(tiny_diffusion, _sampler(scale=5.0, num_particles=2, select="first", dims=(1,)), obs)
    np.testing.assert_allclose(masked, base, atol=1e-6)


def test_noisy_and_clean_evaluation_both_guide(tiny_diffusion):
    obs = _obs()
    base = _act(tiny_diffusion, _sampler(scale=0.0, num_particles=2, select="first"), obs)[:, 0].mean()
    for where in ("clean", "noisy"):
        guided = _act(tiny_diffusion, _sampler(scale=1.0, num_particles=2, select="first", evaluate_on=where), obs)
        assert guided[:, 0].mean() > base + 0.05, where


def test_best_particle_is_selected(tiny_diffusion):
    obs = _obs()
    guide = _sampler(scale=0.0, num_particles=6, select="best")
    tiny_diffusion.reset(seed=3)
    chunk = guide.act(tiny_diffusion, obs)
    tiny_diffusion.reset(seed=3)
    tiny_diffusion.observe(obs)
    all_particles = tiny_diffusion.generate(6).actions
    best = int(np.argmax(all_particles[:, :, 0].mean(axis=1)))
    assert chunk.info["particle"] == best
    np.testing.assert_allclose(chunk.actions, all_particles[best], atol=1e-6)


@pytest.mark.slow
def test_guidance_on_the_shipped_lift_policy_moves_the_end_effector_toward_the_target():
    """The shipped Lift checkpoint, its real action scale: the reward wants the end of the chunk's
    trajectory 10 cm to the side (+y) of where the policy goes on its own."""
    from embodied_steer.adapters.lerobot_diffusion import LeRobotDiffusionPolicy
    from embodied_steer.catalog import find_asset
    from embodied_steer.vls.trajectory import DeltaPositionMap, osc_tracking

    policy = LeRobotDiffusionPolicy.from_pretrained(find_asset("checkpoints/lift_diffusion"))
    state = np.array([-0.1, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.02, -0.02], np.float32)
    env_state = np.array([0.0, 0.0, 0.82, 0, 0, 0, 1, 0.1, 0.0, -0.18], np.float32)
    obs = Observation(state=state, env_state=env_state, instruction="lift the red cube")
    fk = DeltaPositionMap(tracking=osc_tracking(150, 1.0, 20))
    target = torch.tensor([0.0, 0.0, 0.0])

    def reward(stage, keypoints, trajectory):
        return -torch.linalg.norm(trajectory[:, -1] - keypoints[0], dim=-1)

    def end(scale: float) -> torch.Tensor:
        guide = GuidedSampler(reward, lambda o: target[None], fk, [0, 1, 2],
                              GuidanceConfig(scale=scale, num_particles=2, select="first"))
        policy.reset(seed=0)
        actions = guide.act(policy, obs).actions
        return fk(torch.as_tensor(actions)[None], torch.as_tensor(state[:3]))[0, -1]

    base = end(0.0)
    target[:] = base + torch.tensor([0.0, 0.10, 0.0])
    guided = end(3.0)
    assert guided[1] > base[1] + 0.03
    assert torch.linalg.norm(guided - target) < torch.linalg.norm(base - target) - 0.03


# ------------------------------------------------------------------------------- flow direction
@pytest.fixture(scope="module")
def tiny_pi0(tmp_path_factory):
    from embodied_steer.adapters import tiny

    return tiny.tiny_pi0(tmp_path_factory.mktemp("pi0"), chunk_size=8, n_action_steps=4, num_steps=5)


def test_flow_guidance_moves_samples_along_the_reward(tiny_pi0):
    from embodied_steer.adapters import tiny

    obs = tiny.tiny_observation(seed=1)
    # The tiny flow policy's state has no end-effector position; give the sampler one.
    obs = Observation(images=obs.images, state=np.zeros(tiny.TINY_STATE_DIM, np.float32), instruction=obs.instruction)
    base = _act(tiny_pi0, _sampler(scale=0.0, num_particles=3, select="first"), obs)
    for scale in (0.5, 3.0):
        guided = _act(tiny_pi0, _sampler(scale=scale, num_particles=3, select="first"), obs)
        assert guided[:, 0].mean() > base[:, 0].mean() + 1e-3, scale


# ------------------------------------------------------------------------------- diversity
def test_repulsion_gradient_spreads_particles():
    x = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0))
    before = mean_pairwise_kernel(x)
    after = mean_pairwise_kernel(x + 0.05 * repulsion(x) / repulsion(x).norm())
    assert after < before
    assert torch.equal(repulsion(x[:1]), torch.zeros_like(x[:1]))


def test_diversity_term_increases_spread_of_samples(tiny_diffusion):
    obs = _obs()

    def spread(diversity: float) -> float:
        guide = _sampler(scale=0.0, num_particles=8, diversity=diversity, diversity_until=1.0)
        tiny_diffusion.reset(seed=5)
        tiny_diffusion.observe(obs)
        layout = SamplerLayout.of(tiny_diffusion)
        chunk = guide._guided(tiny_diffusion, obs)[0].actions  # all K particles
        assert layout.start == 1
        flat = torch.as_tensor(chunk).flatten(1)
        return float(torch.pdist(flat).mean())

    assert spread(2.0) > 1.1 * spread(0.0)


# ------------------------------------------------------------------------------- Feynman–Kac
@pytest.mark.parametrize(
    "potential, winner",
    [
        # rewards per step for particles 0..2: p0 peaks early, p1 rises late, p2 is steady:
        # p0 = 5, 0, -1 (max 5)   p1 = -3, -2, 3 (last 3, last rise 5)   p2 = 2, 2, 2 (sum 6)
        ("instantaneous", 1),  # last step: p1 highest
        ("max", 0),  # best ever: p0's early peak
        ("additive", 2),  # largest sum: steady p2
        ("difference", 1),  # largest last increase: p1
    ],
)
def test_fk_potentials_select_by_their_weights(potential, winner):
    rewards = torch.tensor([[5.0, -3.0, 2.0], [0.0, -2.0, 2.0], [-1.0, 3.0, 2.0]])  # (steps, K)
    fk = FeynmanKac(potential, 3, temperature=50.0, ess_threshold=0.0, generator=torch.Generator().manual_seed(0))
    for i, r in enumerate(rewards[:-1]):
        assert fk.step(i, r) is None  # threshold 0: never resample, weights accumulate
    fk.log_weights.zero_()
    log_g = fk.log_potential(rewards[-1])
    assert int(torch.argmax(log_g)) == winner
    fk.log_weights = log_g
    fk.ess_threshold = 1.0
    assert fk.maybe_resample(len(rewards)).tolist() == [winner] * 3


def test_fk_potential_values():
    fk = FeynmanKac("difference", 2, temperature=2.0, ess_threshold=0.0)
    assert torch.allclose(fk.log_potential(torch.tensor([1.0, 2.0])), torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(fk.log_potential(torch.tensor([2.0, 1.0])), torch.tensor([2.0, -2.0], dtype=torch.float64))
    fk = FeynmanKac("additive", 2, temperature=1.0, ess_threshold=0.0)
    fk.log_potential(torch.tensor([1.0, 2.0]))
    assert torch.allclose(fk.log_potential(torch.tensor([1.0, 2.0])), torch.tensor([2.0, 4.0], dtype=torch.float64))


def test_adaptive_resampling_triggers_only_below_the_ess_threshold():
    gen = torch.Generator().manual_seed(0)
    fk = FeynmanKac("instantaneous", 4, temperature=1.0, ess_threshold=0.5, generator=gen)
    assert fk.step(0, torch.tensor([0.0, 0.01, 0.0, 0.01])) is None  # ESS ≈ K
    assert fk.ess_history[-1] > 3.9
    indices = fk.step(1, torch.tensor([0.0, 0.0, 10.0, 0.0]))  # one particle dominates
    assert indices is not None and indices.tolist() == [2, 2, 2, 2]
    assert fk.resample_steps == [1]
    assert torch.equal(fk.log_weights, torch.zeros(4, dtype=torch.float64))  # reset after resampling
    assert effective_sample_size(torch.zeros(5)) == pytest.approx(5.0)
    never = FeynmanKac("instantaneous", 4, temperature=1.0, ess_threshold=0.0)
    assert never.step(0, torch.tensor([0.0, 0.0, 100.0, 0.0])) is None


def test_fk_resampling_in_the_sampler_moves_particles(tiny_diffusion):
    guide = _sampler(scale=0.0, num_particles=8, potential="instantaneous", fk_temperature=100.0, ess_threshold=1.0)
    tiny_diffusion.reset(seed=0)
    guide.reset(seed=0)
    chunk = guide.act(tiny_diffusion, _obs())
    assert guide.episode_info()["resamples"] > 0
    assert chunk.info["guided"]
    with pytest.raises(ConfigError, match="potential"):
        GuidanceConfig(potential="maximum")


# ------------------------------------------------------------------------------- schedule and stages
def test_sigmoid_schedule_fades_with_progress():
    s = GuidanceSchedule("sigmoid", midpoint=0.5, steepness=10.0)
    values = [s.factor(p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 0.99 and values[2] == pytest.approx(0.5) and values[-1] < 0.01
    assert GuidanceSchedule().factor(0.9) == 1.0
    assert GuidanceSchedule("sigmoid", floor=0.2).factor(1.0) >= 0.2
    with pytest.raises(ConfigError):
        GuidanceSchedule("cosine")


def test_stage_tracker_switches_and_resets():
    tracker = StageTracker(2, [-0.1, 0.0])
    values = {0: -1.0, 1: -5.0}
    assert tracker.update(lambda s: values[s]) == 0.0 and tracker.stage == 0
    values[0] = -0.55
    assert tracker.update(lambda s: values[s]) == pytest.approx(0.5)
    values[0] = -0.05
    tracker.update(lambda s: values[s])
    assert tracker.stage == 1 and tracker.switches == [(2, 1)]
    values[0] = -1.0  # no going back
    tracker.update(lambda s: values[s])
    assert tracker.stage == 1
    tracker.reset()
    assert tracker.stage == 0 and tracker.switches == []
    with pytest.raises(ConfigError, match="thresholds"):
        StageTracker(3, [0.0, 1.0])
    assert StageTracker(2, [0.1, 0.2, 0.3]).thresholds == [0.1, 0.2]


class _TwoStageReward:
    """Stage 0 is done when the end effector's x > 0; stage 1 rewards larger actions on dim 1."""

    def __init__(self) -> None:
        self.stages_seen: list[int] = []

    def num_stages(self) -> int:
        return 2

    def __call__(self, stage, keypoints, trajectory):
        self.stages_seen.append(stage)
        if stage == 0:
            return trajectory[:, -1, 0]
        return trajectory[..., 1].mean(dim=1)


def test_sampler_switches_stage_from_the_state_and_resets_with_the_policy(tiny_diffusion):
    reward = _TwoStageReward()
    guide = GuidedSampler(reward, _keypoints, AbsolutePositionMap(), [0, 1, 2],
                          GuidanceConfig(scale=1.0, num_particles=2, stage_thresholds=(0.0, 1.0),
                                         schedule=GuidanceSchedule("sigmoid")))
    guide.attach(tiny_diffusion)
    obs = _obs()
    tiny_diffusion.reset(seed=0)
    obs.state[0] = -0.5  # end effector at x = -0.5: stage 0 not done
    assert guide.act(tiny_diffusion, obs).info["stage"] == 0
    obs.state[0] = 0.2  # crossed: stage 1 from now on
    chunk = guide.act(tiny_diffusion, obs)
    assert chunk.info["stage"] == 1 and guide.episode_info()["final_stage"] == 1
    assert guide.episode_info()["stage_switches"] == [(1, 1)]
    tiny_diffusion.reset(seed=1)  # a new episode resets the guide through the attached hook
    assert guide.episode_info()["final_stage"] == 0 and guide.episode_info()["chunks"] == 0


# ------------------------------------------------------------------------------- fallback
@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda s, k, t: torch.full((t.shape[0],), float("nan")), "NaN"),
        (lambda s, k, t: t[..., 0], "shape"),
        (lambda s, k, t: 1 / 0, "ZeroDivisionError"),
        (lambda s, k, t: torch.sqrt(t[..., 0] * 0 - 1).mean(dim=1), "NaN"),
        (lambda s, k, t: [1.0] * t.shape[0], "tensor"),
    ],
)
def test_bad_reward_falls_back_to_unguided_sampling(tiny_diffusion, bad, message, caplog):
    obs = _obs()
    guide = _sampler(reward=bad, scale=1.0, num_particles=4)
    guide.attach(tiny_diffusion)
    tiny_diffusion.reset(seed=7)
    with caplog.at_level("WARNING"):
        chunk = guide.act(tiny_diffusion, obs)
    assert chunk.info["guided"] is False and message in chunk.info["fallback"]
    info = guide.episode_info()
    assert info["fallbacks"] == 1 and guide.fallbacks == 1 and message in info["fallback_errors"][0]
    assert "unguided" in caplog.text
    # The fallback chunk is exactly the unguided policy's chunk for the same seed.
    tiny_diffusion.reset(seed=7)
    np.testing.assert_allclose(chunk.actions, tiny_diffusion.act(obs).actions, atol=1e-6)


def test_guide_needs_the_denoising_step_point():
    from embodied_steer.experts.scripted import LiftExpert

    with pytest.raises(UnsupportedIntervention, match="denoising_step"):
        _sampler().attach(LiftExpert())


def test_config_rejects_bad_values():
    for bad in ({"scale": -1.0}, {"num_particles": 0}, {"evaluate_on": "x0"}, {"diversity": -1},
                {"select": "worst"}, {"dims": ()}):
        with pytest.raises(ConfigError):
            GuidanceConfig(**bad)


def test_edit_formulas_match_the_issue():
    """ε̂ = ε − λ√(1−ᾱ)g without clipping; v̂ = v − λg in LeRobot's flow time (1 = noise)."""
    guide = _sampler(normalize=False)
    x, eps, g = torch.zeros(1, 2, 3), torch.full((1, 2, 3), 0.1), torch.full((1, 2, 3), 0.2)
    ab = 0.64
    step = DenoiseStep(index=0, num_steps=1, t=1.0, x=x, model_output=eps, prediction="epsilon", x0=x,
                       alpha_bar=ab, to_actions=lambda a: a)
    assert torch.allclose(guide._apply(step, g, None), eps - math.sqrt(1 - ab) * g)
    # With a clip range that does not bind, the clip-aware form is the same formula.
    assert torch.allclose(guide._apply(step, g, 100.0), eps - math.sqrt(1 - ab) * g, atol=1e-6)
    flow = DenoiseStep(index=0, num_steps=1, t=1.0, x=x, model_output=eps, prediction="velocity", x0=x,
                       alpha_bar=None, to_actions=lambda a: a)
    assert torch.allclose(guide._apply(flow, g, None), eps - g)
    assert isinstance(StepEdit(model_output=eps), StepEdit)


def test_stage_switch_waits_for_the_dwell():
    tracker = StageTracker(2, [0.0], dwell=2)
    tracker.update(lambda s: 1.0 if s == 0 else -1.0)
    assert tracker.stage == 0  # met once: not yet
    tracker.update(lambda s: -1.0 if s == 0 else -1.0)
    tracker.update(lambda s: 1.0 if s == 0 else -1.0)
    assert tracker.stage == 0  # the count restarts when the threshold is missed
    tracker.update(lambda s: 1.0 if s == 0 else -1.0)
    assert tracker.stage == 1
    with pytest.raises(ConfigError, match="dwell"):
        StageTracker(2, [0.0], dwell=0)


# ------------------------------------------------------------------------------- command line
def test_cli_guide_rejects_a_policy_without_denoising_step(capsys):
    from embodied_steer.cli import main

    code = main(["eval", "env=lift", "policy=scripted_lift", "guide=grad", "episodes=1", "max_steps=2"])
    assert code == 2 and "denoising_step" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_guided_eval_runs_and_records_episode_info(tmp_path):
    import json

    from embodied_steer.cli import main

    out = tmp_path / "eval"
    code = main(["eval", "env=lift_ood", "policy=lift_diffusion", "guide=vls", "guide.num_particles=2",
                 "episodes=1", "max_steps=16", f"output_dir={out}", "torch_threads=1"])
    assert code == 0
    record = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert record["info"]["chunks"] == 2 and record["info"]["fallbacks"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extra"]["guide"]["num_particles"] == 2 and summary["extra"]["guide"]["potential"] == "max"


def test_guide_settings_are_checked():
    from embodied_steer.vls.configure import guidance_config

    config = guidance_config({"scale": 2.0, "potential": None, "dims": [0, 1, 2], "stage_thresholds": -0.02,
                              "schedule": {"kind": "sigmoid", "midpoint": 0.5}})
    assert config.dims == (0, 1, 2) and config.stage_thresholds == (-0.02,) and config.schedule.kind == "sigmoid"
    with pytest.raises(ConfigError, match="unknown guide settings"):
        guidance_config({"lambda": 1.0})
    with pytest.raises(ConfigError, match="schedule"):
        guidance_config({"schedule": {"shape": "s"}})


def test_detach_stops_resetting_with_the_policy(tiny_diffusion):
    """Switching guidance off at run time: a detached sampler no longer follows ``policy.reset``; a
    sampler attached after it still does."""
    first, second = _sampler(num_particles=2), _sampler(num_particles=2)
    before = tiny_diffusion.reset  # (the module's fixture may carry samplers of earlier tests)
    first.attach(tiny_diffusion)
    second.attach(tiny_diffusion)
    obs = _obs()
    tiny_diffusion.reset(seed=0)
    first.act(tiny_diffusion, obs)
    second.act(tiny_diffusion, obs)
    first.detach(tiny_diffusion)  # the inner one: the outer reset hook is rewired around it
    tiny_diffusion.reset(seed=1)
    assert first.episode_info()["chunks"] == 1 and second.episode_info()["chunks"] == 0
    second.act(tiny_diffusion, obs)
    second.detach(tiny_diffusion)
    tiny_diffusion.reset(seed=2)
    assert second.episode_info()["chunks"] == 1
    assert tiny_diffusion.reset == before  # both hooks gone, the earlier chain untouched


def test_guide_from_context_compiles_a_program_sent_as_text(tiny_diffusion):
    """The ROS policy server's path: no simulator, the program arrives as text and goes through the
    sandbox; a hostile one is refused with the sandbox's reason."""
    from embodied_steer.vls.configure import GuideContext, guide_from_context
    from embodied_steer.vls.errors import RewardProgramError

    extra = {"controller_config": {"control_delta": True, "input_max": 1, "input_min": -1, "output_max": 0.05,
                                   "output_min": -0.05, "kp": 150, "damping_ratio": 1}, "sim_timestep": 0.002}
    names = ["eef_pos_x", "eef_pos_y", "eef_pos_z"] + [f"s{i}" for i in range(6)]
    context = GuideContext(task="Lift", state_names=names, spec_extra=extra, control_hz=20.0,
                           keypoints=lambda obs: torch.tensor([[0.0, 0.0, 1.2]]))
    up = "def stage_1(keypoints, trajectory):\n    return trajectory[:, -1, 2]\n"
    guide = guide_from_context({"program_source": up, "num_particles": 2, "scale": 3.0}, tiny_diffusion, context)
    try:
        obs = _obs()
        tiny_diffusion.reset(seed=0)
        guided = guide.act(tiny_diffusion, obs)
        assert guided.info["guided"] is True
        tiny_diffusion.reset(seed=0)
        plain = tiny_diffusion.act(obs).actions
        assert guided.actions[:, 2].mean() > plain[:, 2].mean()  # the program asks for a higher end point
    finally:
        guide.detach(tiny_diffusion)
    with pytest.raises(RewardProgramError, match="import"):
        guide_from_context({"program_source": "import os\ndef stage_1(keypoints, trajectory):\n    return 0\n"},
                           tiny_diffusion, context)
    with pytest.raises(ConfigError, match="vlm"):
        guide_from_context({"program": "vlm"}, tiny_diffusion, context)
