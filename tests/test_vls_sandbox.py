"""The reward-program sandbox: hostile programs are refused or stopped, benign ones compute the
right rewards and gradients."""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from embodied_steer.vls.errors import RewardProgramError, SandboxLimitExceeded, SandboxViolation
from embodied_steer.vls.limits import SandboxLimits
from embodied_steer.vls.program import RewardProgram
from embodied_steer.vls.sandbox import check_reward_program, compile_reward_program

DATA = Path(__file__).parent / "data"
HOSTILE = sorted((DATA / "hostile_programs").glob("*.py"))
BENIGN = sorted((DATA / "benign_programs").glob("*.py"))
NO_PROBE = SandboxLimits(probe=False)


def _children() -> set[int]:
    """PIDs of this process's child processes (from /proc)."""
    me = os.getpid()
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            kids.add(int(entry))
    return kids


def _inputs(k: int = 3, b: int = 4, t: int = 8, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    keypoints = torch.rand(k, 3, generator=gen, dtype=dtype)
    trajectory = torch.rand(b, t, 3, generator=gen, dtype=dtype).requires_grad_(True)
    return keypoints, trajectory


def test_hostile_corpus_is_large_enough():
    assert len(HOSTILE) >= 50


@pytest.mark.parametrize("path", HOSTILE, ids=[p.stem for p in HOSTILE])
def test_hostile_program_is_refused_and_nothing_escapes(path: Path, tmp_path: Path):
    canary = tmp_path / "canary"
    text = path.read_text()
    expected = re.search(r"^# rejected-because: (.+)$", text, re.M)
    assert expected, f"{path.name} lacks a '# rejected-because:' header"
    source = text.replace("CANARY_PATH", str(canary))
    keypoints, trajectory = _inputs()
    before = trajectory.detach().clone()
    kids = _children()
    torch_state = (torch.get_default_dtype(), torch.get_num_threads(), torch.is_grad_enabled())
    cwd_files = set(os.listdir("."))
    start = time.monotonic()
    with pytest.raises(RewardProgramError) as info:
        program = compile_reward_program(source, limits=NO_PROBE)
        for stage in range(program.num_stages()):
            program(stage, keypoints, trajectory)
    elapsed = time.monotonic() - start
    assert re.search(expected.group(1), str(info.value), re.I), str(info.value)
    assert not canary.exists()
    assert _children() == kids
    assert torch.equal(trajectory.detach(), before) and trajectory.grad is None
    assert (torch.get_default_dtype(), torch.get_num_threads(), torch.is_grad_enabled()) == torch_state
    assert set(os.listdir(".")) == cwd_files
    assert elapsed < 60, "a hostile program ran far longer than any limit allows"  # hang guard, not a speed test


def test_violation_names_line_construct_and_reason():
    source = "def stage_1(keypoints, trajectory):\n    x = 1\n    return ().__class__\n"
    with pytest.raises(SandboxViolation) as info:
        compile_reward_program(source, limits=NO_PROBE)
    err = info.value
    assert err.line == 3 and err.stage == "stage_1"
    assert "__class__" in err.construct and "dunder" in err.reason
    assert "line 3" in str(err)


def test_runtime_limit_error_names_stage_and_line():
    source = "def stage_1(keypoints, trajectory):\n    return trajectory.sum(dim=(1, 2))\n" \
             "def stage_2(keypoints, trajectory):\n    x = torch.ones(100000, 100000)\n    return x\n"
    program = compile_reward_program(source, limits=NO_PROBE)
    keypoints, trajectory = _inputs()
    assert program(0, keypoints, trajectory).shape == (4,)
    with pytest.raises(SandboxLimitExceeded) as info:
        program(1, keypoints, trajectory)
    assert info.value.stage == "stage_2" and info.value.line == 4


def test_time_limit_stops_a_long_call():
    # 64 x 16 iterations of a 1e6-element operation: each step is allowed, the call's deadline is not.
    source = ("def stage_1(keypoints, trajectory):\n    s = trajectory.sum(dim=(1, 2))\n"
              "    x = torch.ones(1000000)\n    for i in range(64):\n        for j in range(16):\n"
              "            x = torch.sqrt(x + 1.0)\n    return s\n")
    limits = SandboxLimits(probe=False, call_timeout_s=0.05, max_total_numel=1 << 40, max_work=1 << 40)
    program = compile_reward_program(source, limits=limits)
    start = time.monotonic()
    with pytest.raises(SandboxLimitExceeded, match="time limit"):
        program(0, *_inputs())
    assert time.monotonic() - start < 30  # hang guard only


# --- benign programs --------------------------------------------------------------------------

def _ref_reach_final(stage, kp, tr):
    return -torch.linalg.norm(tr[:, -1, :] - kp[0], dim=-1)


def _ref_closest_approach(stage, kp, tr):
    return -(tr - kp[1]).norm(dim=-1).min(dim=1).values


def _ref_two_stage_lift(stage, kp, tr):
    if stage == 0:
        return -((tr[:, -1] - kp[0]) ** 2).sum(-1)
    return -((tr[:, -1] - kp[0] - torch.tensor([0.0, 0.0, 0.1], dtype=tr.dtype)) ** 2).sum(-1)


def _ref_smooth_loop(stage, kp, tr):
    return -(((tr[:, 1:4] - tr[:, 0:3]) ** 2).sum(-1)).sum(-1)


def _ref_soft_height(stage, kp, tr):
    z = tr[:, :, 2]
    above = F.softplus(z - kp[0, 2]).mean(1)
    low = torch.where(z < 0, z, torch.zeros_like(z)).sum(1)
    return 2.0 * above + low.clamp(min=-1.0)


def _ref_cdist_nearest(stage, kp, tr):
    return -torch.cdist(tr[:, -1], kp).amin(1)


def _ref_exp_shaped(stage, kp, tr):
    return torch.exp(-torch.norm(tr[:, -1] - kp[0], dim=-1) / 0.05)


def _ref_builtins_and_math(stage, kp, tr):
    values = tr[:, :, 0].max(dim=1).values
    return -(tr[:, -1, 1] - kp[0, 1]).abs() + torch.maximum(values, tr[:, 0, 0]) * math.cos(math.pi / 3)


def _ref_weighted_time(stage, kp, tr):
    w = torch.linspace(0.5, 1.0, tr.shape[1], dtype=tr.dtype)
    return -((tr - kp[0]).norm(dim=-1) * w).sum(1) / w.sum()


def _ref_mask_logic(stage, kp, tr):
    z = tr[..., 2]
    inside = ((z > 0.1) & (z < 0.5)).to(tr.dtype)
    return -(((z - 0.3) ** 2) * inside).sum(1) - 0.1 * tr[:, -1].norm(dim=-1)


def _ref_three_stages_can(stage, kp, tr):
    lift = torch.tensor([0.0, 0.0, 0.15], dtype=tr.dtype)
    if stage == 0:
        return -(tr[:, -1] - kp[0]).norm(dim=-1)
    if stage == 1:
        return -(tr[:, -1] - kp[0] - lift).norm(dim=-1)
    goal = kp[1] + lift
    return -(tr[:, -1, :2] - goal[:2]).norm(dim=-1) - (tr[:, -1, 2] - goal[2]).abs()


def _ref_vlm_idioms(stage, kp, tr):
    target = kp[0].to(tr.dtype) + torch.tensor([0.0, 0.0, 0.05], dtype=tr.dtype)
    d = (tr - target).norm(dim=-1)
    return -(0.5 * d.min(dim=1).values + 0.5 * d[:, -1])


REFERENCES = {name[5:]: fn for name, fn in globals().items() if name.startswith("_ref_")}
STAGES = {"two_stage_lift": 2, "three_stages_can": 3}


def test_every_benign_program_has_a_reference():
    assert {p.stem for p in BENIGN} == set(REFERENCES)


@pytest.mark.parametrize("path", BENIGN, ids=[p.stem for p in BENIGN])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_benign_program_values_and_gradients(path: Path, dtype):
    program = compile_reward_program(path.read_text(), limits=NO_PROBE)
    assert isinstance(program, RewardProgram)
    assert program.num_stages() == STAGES.get(path.stem, 1)
    assert program.stage_names == tuple(f"stage_{i + 1}" for i in range(program.num_stages()))
    reference = REFERENCES[path.stem]
    keypoints, trajectory = _inputs(dtype=dtype)
    for stage in range(program.num_stages()):
        out = program(stage, keypoints, trajectory)
        assert out.shape == (4,) and out.dtype == dtype
        (grad,) = torch.autograd.grad(out.sum(), trajectory)
        ref_traj = trajectory.detach().clone().requires_grad_(True)
        ref = reference(stage, keypoints, ref_traj)
        (ref_grad,) = torch.autograd.grad(ref.sum(), ref_traj)
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(out.detach(), ref.detach(), atol=tol, rtol=tol)
        torch.testing.assert_close(grad, ref_grad, atol=tol, rtol=tol)


def test_gradcheck_through_the_sandbox():
    program = compile_reward_program((DATA / "benign_programs" / "three_stages_can.py").read_text(), limits=NO_PROBE)
    keypoints, trajectory = _inputs(b=2, t=4, dtype=torch.float64)
    for stage in range(3):
        assert torch.autograd.gradcheck(lambda tr, s=stage: program(s, keypoints, tr), (trajectory,))


def test_program_does_not_modify_its_inputs():
    source = "def stage_1(keypoints, trajectory):\n    trajectory += 1.0\n    keypoints -= 1.0\n" \
             "    return trajectory[:, -1, 0] + keypoints[0, 0]\n"
    program = compile_reward_program(source, limits=NO_PROBE)
    keypoints, trajectory = _inputs()
    kp0, tr0 = keypoints.clone(), trajectory.detach().clone()
    out = program(0, keypoints, trajectory)
    torch.testing.assert_close(out, tr0[:, -1, 0] + kp0[0, 0])
    assert torch.equal(keypoints, kp0) and torch.equal(trajectory.detach(), tr0)


@pytest.mark.parametrize("body, message", [
    ("return trajectory.sum()", r"shape \(\), expected \(4,\)"),
    ("return trajectory.sum(dim=2)", r"shape \(4, 8\)"),
    ("return trajectory[:, 0, 0] / 0.0", "non-finite"),
    ("return torch.log(trajectory[:, 0, 0] - 5.0)", "non-finite"),
    ("return trajectory[:, 0, 0] > 0.5", "floating-point"),
    ("return keypoints[7]", r"IndexError|index 7"),
    ("return trajectory + keypoints[:2]", r"RuntimeError|size"),
    ("return 1.0", "returned float"),
])
def test_bad_outputs_raise_clear_errors(body, message):
    program = compile_reward_program(f"def stage_1(keypoints, trajectory):\n    {body}\n", limits=NO_PROBE)
    with pytest.raises(RewardProgramError, match=message) as info:
        program(0, *_inputs())
    assert info.value.stage == "stage_1"
    assert str(info.value).startswith("stage_1")


@pytest.mark.parametrize("stage, keypoints, trajectory, message", [
    (1, torch.zeros(2, 3), torch.zeros(2, 4, 3), "out of range"),
    (-1, torch.zeros(2, 3), torch.zeros(2, 4, 3), "out of range"),
    (0, torch.zeros(2, 2), torch.zeros(2, 4, 3), r"keypoints must have shape \(K, 3\)"),
    (0, torch.zeros(2, 3), torch.zeros(4, 3), r"trajectory must have shape \(B, T, 3\)"),
    (0, torch.zeros(2, 3), torch.full((2, 4, 3), float("nan")), "NaN"),
    (0, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, 3), "floating point"),
])
def test_bad_inputs_raise_clear_errors(stage, keypoints, trajectory, message):
    program = compile_reward_program("def stage_1(keypoints, trajectory):\n    return trajectory.sum(dim=(1, 2))\n",
                                     limits=NO_PROBE)
    with pytest.raises(RewardProgramError, match=message):
        program(stage, keypoints, trajectory)


@pytest.mark.parametrize("source, message", [
    ("x = 1\n", "no stage function"),
    ("def stage_2(keypoints, trajectory):\n    return trajectory.sum(dim=(1, 2))\n", "without gaps"),
    ("def stage_1(kp, traj):\n    return traj.sum(dim=(1, 2))\n", r"exactly `\(keypoints, trajectory\)`"),
    ("def stage_1(keypoints, trajectory, extra=1):\n    return trajectory.sum(dim=(1, 2))\n", "exactly"),
    ("def stage_1(keypoints, trajectory):\n    x = 1\n", "never returns"),
    ("def stage_1(keypoints, trajectory)\n    return 1\n", "syntax error at line 1"),
    ("def stage_1(keypoints, trajectory):\n    return undefined_name\n", "unknown name"),
    ("def stage_1(keypoints, trajectory):\n    torch = 1\n    return trajectory\n", "reserved"),
])
def test_invalid_programs_are_explained(source, message):
    with pytest.raises(RewardProgramError, match=message):
        compile_reward_program(source, limits=NO_PROBE)


def test_oversized_and_deeply_nested_sources_are_refused():
    with pytest.raises(SandboxViolation, match="characters"):
        check_reward_program("#" * 30_000)
    deep = "def stage_1(keypoints, trajectory):\n    return " + "(" * 500 + "trajectory" + ")" * 500 + "\n"
    with pytest.raises(RewardProgramError):
        check_reward_program(deep)


def test_pickle_round_trip_recompiles_through_the_sandbox():
    import copy
    import pickle

    program = compile_reward_program((DATA / "benign_programs" / "two_stage_lift.py").read_text(), limits=NO_PROBE)
    clone = pickle.loads(pickle.dumps(program))
    assert clone == program and clone is not program and copy.deepcopy(program) == program
    keypoints, trajectory = _inputs()
    torch.testing.assert_close(clone(1, keypoints, trajectory), program(1, keypoints, trajectory))


def test_reward_program_cannot_be_built_without_the_sandbox():
    with pytest.raises(RewardProgramError, match="compile_reward_program"):
        RewardProgram(source="def stage_1(keypoints, trajectory): return 0", stage_names=("stage_1",))


# --- the probe subprocess -------------------------------------------------------------------------

def test_probe_accepts_a_valid_program_and_reports_a_failing_stage(monkeypatch):
    from embodied_steer.vls import sandbox

    good = (DATA / "benign_programs" / "two_stage_lift.py").read_text()
    monkeypatch.setattr(sandbox, "_PROBED", set())
    calls = []
    real = sandbox._probe
    monkeypatch.setattr(sandbox, "_probe", lambda *a: (calls.append(a), real(*a)))
    assert compile_reward_program(good).num_stages() == 2
    assert compile_reward_program(good).num_stages() == 2
    assert len(calls) == 1  # a passed probe is remembered for the same text and limits
    bad = "def stage_1(keypoints, trajectory):\n    return trajectory.sum(dim=(1, 2))\n" \
          "def stage_2(keypoints, trajectory):\n    return keypoints[40].sum() + trajectory[:, 0, 0]\n"
    with pytest.raises(RewardProgramError, match=r"probe inputs.*stage_2"):
        compile_reward_program(bad)


def test_probe_enforces_os_memory_limit():
    # The in-process limits are lifted so that only RLIMIT_AS of the probe process can stop it.
    limits = SandboxLimits(probe_memory_mb=200, max_tensor_numel=1 << 40, max_total_numel=1 << 40,
                           max_work=1 << 40)
    source = "def stage_1(keypoints, trajectory):\n    x = torch.ones(200000000)\n" \
             "    return trajectory.sum(dim=(1, 2)) + x.sum()\n"
    kids = _children()
    with pytest.raises(SandboxLimitExceeded, match="memory"):
        compile_reward_program(source, limits=limits)
    assert _children() == kids


def test_probe_enforces_cpu_limit():
    limits = SandboxLimits(probe_cpu_s=1, call_timeout_s=1000.0, max_tensor_numel=1 << 40, max_total_numel=1 << 40,
                           max_work=1 << 50)
    source = ("def stage_1(keypoints, trajectory):\n    a = torch.ones(1500, 1500)\n"
              "    for i in range(64):\n        a = torch.tanh(a @ a)\n    return trajectory.sum(dim=(1, 2)) + a.sum()\n")
    with pytest.raises(SandboxLimitExceeded, match="SIGXCPU|SIGKILL|CPU"):
        compile_reward_program(source, limits=limits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_programs_run_on_the_trajectory_device():
    # torch.zeros / torch.tensor inside the program must follow the trajectory onto the GPU.
    for name in ("smooth_loop", "two_stage_lift", "weighted_time"):
        program = compile_reward_program((DATA / "benign_programs" / f"{name}.py").read_text(), limits=NO_PROBE)
        keypoints, trajectory = _inputs()
        kp, tr = keypoints.cuda(), trajectory.detach().cuda().requires_grad_(True)
        for stage in range(program.num_stages()):
            out = program(stage, kp, tr)
            assert out.device == tr.device
            torch.testing.assert_close(out.cpu(), program(stage, keypoints, trajectory).detach())
