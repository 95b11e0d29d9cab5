"""Reward programs written by a VLM (or shipped defaults), held by a :class:`ProgramWriter`.

The writer keeps the *current* program. A new VLM answer replaces it only when it contains a
program the sandbox accepts; otherwise :class:`~embodied_steer.vls.errors.NoProgramInResponse` is
raised and the previous program stays in place, so a sampler always has a valid reward.
"""

from __future__ import annotations

import re
from dataclasses import replace
from importlib import resources
from string import Template
from typing import Any, Sequence

import numpy as np

from embodied_steer.vls.errors import NoProgramInResponse, RewardProgramError
from embodied_steer.vls.keypoints import Keypoint, keypoint_image, keypoint_legend, legend_text, task_name
from embodied_steer.vls.limits import SandboxLimits
from embodied_steer.vls.program import RewardProgram
from embodied_steer.vls.runtime import TENSOR_METHODS, TORCH_FUNCTIONS
from embodied_steer.vls.sandbox import compile_reward_program
from embodied_steer.vls.vlm import VLMClient, VLMConfig, encode_png, image_part

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.S)


def load_prompt(name: str) -> Template:
    """A prompt template shipped in ``embodied_steer/vls/prompts/<name>.txt`` (``$placeholders``)."""
    return Template(resources.files("embodied_steer.vls").joinpath("prompts", f"{name}.txt").read_text("utf-8"))


def candidate_programs(text: str) -> list[str]:
    """Code blocks of a response, ```python blocks first, then untagged ones; the whole text
    when there are no fences."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python = [b for lang, b in blocks if lang in ("python", "py", "python3")]
    other = [b for lang, b in blocks if lang == ""]
    if blocks:
        return python + other
    return [text] if "def stage_" in text else []


def extract_program(text: str, *, limits: SandboxLimits | None = None) -> RewardProgram:
    """The first code block of ``text`` that compiles through the sandbox.

    Raises:
        NoProgramInResponse: no block, or none accepted (the message lists each block's error).
    """
    candidates = candidate_programs(text)
    if not candidates:
        raise NoProgramInResponse("the VLM response contains no ```python code block with stage functions")
    errors = []
    for i, source in enumerate(candidates):
        try:
            return compile_reward_program(source, limits=limits)
        except RewardProgramError as exc:
            errors.append(f"block {i + 1}: {exc}")
    raise NoProgramInResponse("no code block in the VLM response is a valid reward program — " + "; ".join(errors))


def build_prompt(instruction: str, legend: Sequence[Keypoint], *, camera: str = "agentview",
                 limits: SandboxLimits | None = None) -> str:
    """The user prompt for one task: instruction, keypoint legend and the sandbox's rules."""
    limits = limits or SandboxLimits()
    shown = ", ".join(f"torch.{n}" for n in sorted(TORCH_FUNCTIONS))
    return load_prompt("reward_program").substitute(
        instruction=instruction.strip(), camera=camera, num_keypoints=len(legend), legend=legend_text(legend),
        max_stages=limits.max_stages, max_loop=limits.max_loop_iterations, torch_functions=shown,
        tensor_methods=", ".join(f".{m}()" for m in sorted(TENSOR_METHODS)),
    )


class ProgramWriter:
    """Holds the current reward program and asks a VLM for new ones.

    Args:
        program: the program to start from (e.g. the task's shipped default), or ``None``.
        client: a :class:`VLMClient`, or ``None`` when no VLM is configured (then :meth:`write`
            raises and the current program stays).
        limits: sandbox limits for VLM-written programs (the probe subprocess runs by default).
        repair_attempts: how many times a rejected program is sent back with the sandbox's error.
    """

    def __init__(self, program: RewardProgram | None = None, *, client: VLMClient | None = None,
                 limits: SandboxLimits | None = None, repair_attempts: int = 1) -> None:
        self.program = program
        self.client = client
        self.limits = limits or SandboxLimits()
        self.repair_attempts = int(repair_attempts)
        self.last_error: str | None = None
        self.last_response: str | None = None

    @classmethod
    def for_task(cls, task: str, *, variant: str | None = None, config: VLMConfig | None = None,
                 **kwargs: Any) -> "ProgramWriter":
        """Start from the shipped program of ``task`` (or of its ``variant``, e.g. ``"obstacle"``); use
        ``config`` (default: from the environment) for a VLM."""
        from embodied_steer.vls.defaults import default_program

        config = config if config is not None else VLMConfig.from_env()
        return cls(default_program(task, variant=variant), client=VLMClient(config) if config is not None else None,
                   **kwargs)

    def write(self, instruction: str, legend: Sequence[Keypoint], image: np.ndarray | None = None, *,
              camera: str = "agentview") -> RewardProgram:
        """Ask the VLM for a program for ``instruction``; on success it becomes :attr:`program`.

        Args:
            instruction: the task in words.
            legend: what each keypoint row is (the numbers drawn on ``image``).
            image: ``(H, W, 3)`` uint8 image with numbered keypoint markers, or ``None``.

        Raises:
            VLMError: the endpoint failed (timeout, HTTP error, malformed JSON); program kept.
            NoProgramInResponse: no valid program in the answer(s); program kept.
        """
        if self.client is None:
            raise NoProgramInResponse("no VLM is configured (set EMBODIED_STEER_VLM_BASE_URL and _MODEL); "
                                      "keeping the current program")
        # The probe runs the program on as many keypoints as the legend has, so `keypoints[5]` in a
        # two-keypoint task is caught here, with a message the repair prompt can send back.
        limits = replace(self.limits, probe_num_keypoints=len(legend))
        system = load_prompt("system").template.strip()
        prompt = build_prompt(instruction, legend, camera=camera, limits=limits)
        png = encode_png(image) if image is not None else None
        user: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        if png is not None:
            user.append(image_part(png))
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        for attempt in range(self.repair_attempts + 1):
            text = self.client.chat(messages)
            self.last_response = text
            try:
                program = extract_program(text, limits=limits)
            except NoProgramInResponse as exc:
                self.last_error = str(exc)
                if attempt == self.repair_attempts:
                    raise NoProgramInResponse(f"{exc} (after {attempt + 1} answer(s); keeping the previous program)") from None
                messages = messages + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": load_prompt("repair").substitute(error=str(exc))},
                ]
                continue
            self.program = program
            self.last_error = None
            return program
        raise AssertionError("unreachable")

    def write_for_env(self, env: Any, *, instruction: str | None = None, camera: str = "agentview",
                      height: int = 512, width: int = 512, extra_bodies: Sequence[str] = ()) -> RewardProgram:
        """Render ``env``'s keypoint image and ask for a program (see :meth:`write`)."""
        image, _, _ = keypoint_image(env, camera=camera, height=height, width=width, extra_bodies=extra_bodies)
        legend = keypoint_legend(task_name(env), extra_bodies)
        text = instruction if instruction is not None else getattr(env, "instruction", "") or task_name(env)
        return self.write(text, legend, image, camera=camera)
