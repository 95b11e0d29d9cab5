"""Keypoints for reward programs: 3-D points from the simulator's ground truth, and an image of them.

A reward program receives ``keypoints`` as a ``(K, 3)`` tensor (metres, world frame) whose rows
follow a per-task *legend* (``KEYPOINT_LEGENDS``); the VLM sees the same points as numbered markers
on a camera image, so that "keypoint 0" means the same thing to the writer and to the program.

Keypoints come from the simulator (object body positions, goal placements), not from perception.
Tasks are looked up by the robosuite environment's class name; variants of a shipped task (moved
objects, an added obstacle) reuse its legend, and ``extra_bodies`` appends any other MuJoCo body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from embodied_steer.core.errors import ConfigError


@dataclass(frozen=True)
class Keypoint:
    """One entry of a task's legend: its name and what it marks (shown to the VLM)."""

    name: str
    description: str


def _lift(env: Any) -> list[np.ndarray]:
    sim = env.sim
    return [np.asarray(sim.data.body_xpos[env.cube_body_id]), np.asarray(env.table_offset, dtype=np.float64)]


def _pick_place_single(env: Any) -> list[np.ndarray]:
    obj = env.objects[env.object_id]
    pos = np.asarray(env.sim.data.body_xpos[env.obj_body_id[obj.name]])
    return [pos, np.asarray(env.target_bin_placements[env.object_id], dtype=np.float64)]


#: rows of ``keypoints`` per robosuite task.
KEYPOINT_LEGENDS: dict[str, tuple[Keypoint, ...]] = {
    "Lift": (
        Keypoint("cube", "centre of the red cube"),
        Keypoint("table", "centre of the table top (its height is the table surface)"),
    ),
    "PickPlaceCan": (
        Keypoint("can", "centre of the can"),
        Keypoint("bin", "the can's target spot on the floor of the goal bin"),
    ),
}
_EXTRACTORS: dict[str, Callable[[Any], list[np.ndarray]]] = {"Lift": _lift, "PickPlaceCan": _pick_place_single}


def register_task(task: str, legend: Sequence[Keypoint], extractor: Callable[[Any], list[np.ndarray]]) -> None:
    """Add keypoints for another robosuite task: ``extractor(robosuite_env)`` returns one ``(3,)``
    position (metres, world frame) per legend entry."""
    KEYPOINT_LEGENDS[task] = tuple(legend)
    _EXTRACTORS[task] = extractor


def _robosuite(env: Any) -> Any:
    inner = getattr(env, "unwrapped_robosuite", None)
    if inner is not None:
        return inner
    if hasattr(env, "sim"):
        return env
    raise ConfigError(f"keypoints need a robosuite environment (RobosuiteEnv or robosuite env), got {type(env).__name__}")


def task_name(env: Any) -> str:
    """The robosuite task class name of ``env`` (``"Lift"``, ``"PickPlaceCan"``)."""
    return type(_robosuite(env)).__name__


def keypoint_legend(task: str, extra_bodies: Sequence[str] = ()) -> tuple[Keypoint, ...]:
    """The legend of ``task`` (plus one entry per extra MuJoCo body)."""
    if task not in KEYPOINT_LEGENDS:
        raise ConfigError(f"no keypoints defined for task '{task}'; known: {sorted(KEYPOINT_LEGENDS)} "
                          "(embodied_steer.vls.keypoints.register_task adds one)")
    return KEYPOINT_LEGENDS[task] + tuple(Keypoint(b, f"MuJoCo body '{b}'") for b in extra_bodies)


def legend_text(legend: Sequence[Keypoint]) -> str:
    """One line per keypoint, ``"0: cube — centre of the red cube"``, for prompts."""
    return "\n".join(f"{i}: {k.name} — {k.description}" for i, k in enumerate(legend))


def keypoints_for(env: Any, *, extra_bodies: Sequence[str] = ()) -> tuple[tuple[str, ...], torch.Tensor]:
    """Ground-truth keypoints of the current simulator state.

    Args:
        env: a :class:`~embodied_steer.sim.robosuite_env.RobosuiteEnv` or a raw robosuite env.
        extra_bodies: MuJoCo body names appended after the task's own keypoints (e.g. an obstacle).

    Returns:
        ``(names, keypoints)``: the legend's names and a ``(K, 3)`` float32 tensor, metres, world frame.
    """
    rs = _robosuite(env)
    task = type(rs).__name__
    legend = keypoint_legend(task, extra_bodies)
    points = list(_EXTRACTORS[task](rs))
    for body in extra_bodies:
        try:
            body_id = rs.sim.model.body_name2id(body)
        except Exception as exc:  # noqa: BLE001 - robosuite raises ValueError/KeyError depending on version
            raise ConfigError(f"no MuJoCo body named '{body}' in {task}: {exc}") from None
        points.append(np.asarray(rs.sim.data.body_xpos[body_id]))
    array = np.stack([np.asarray(p, dtype=np.float64).reshape(3) for p in points])
    return tuple(k.name for k in legend), torch.as_tensor(array, dtype=torch.float32)


def camera_matrix(sim: Any, camera: str, height: int, width: int) -> np.ndarray:
    """``3 x 4`` projection matrix (world → homogeneous pixels) of a MuJoCo camera.

    Intrinsics from the camera's vertical field of view (square pixels, principal point at the image
    centre), extrinsics from its current pose; MuJoCo cameras look down their −z axis with +y up,
    so the axes are flipped to the image convention (x right, y down, z forward), as robosuite's
    ``camera_utils`` does (not imported here: it needs ``h5py``)."""
    cam_id = sim.model.camera_name2id(camera)
    fovy = float(sim.model.cam_fovy[cam_id])
    focal = 0.5 * height / np.tan(np.deg2rad(fovy) / 2.0)
    intrinsics = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    position = np.asarray(sim.data.cam_xpos[cam_id], dtype=np.float64)
    rotation = np.asarray(sim.data.cam_xmat[cam_id], dtype=np.float64).reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
    world_to_camera = np.concatenate([rotation.T, (-rotation.T @ position)[:, None]], axis=1)
    return intrinsics @ world_to_camera


def project_points(sim: Any, camera: str, points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel coordinates ``(K, 2)`` as ``(row, col)`` of world points ``(K, 3)`` (metres) in an upright
    ``height x width`` image of ``camera``. Points behind the camera get ``-1`` in both coordinates."""
    homogeneous = np.concatenate([np.asarray(points, dtype=np.float64), np.ones((len(points), 1))], axis=1)
    cam = homogeneous @ camera_matrix(sim, camera, height, width).T
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = np.stack([cam[:, 1] / depth, cam[:, 0] / depth], axis=1)
    pixels[depth <= 0] = -1.0
    return pixels


def render_camera(sim: Any, camera: str, height: int, width: int, *, shadow_size: int = 1024) -> np.ndarray:
    """Render an upright RGB image ``(H, W, 3)`` uint8 of ``camera`` with a private MuJoCo renderer
    (independent of robosuite's own render context; works when the env has no cameras)."""
    import mujoco

    model, data = sim.model._model, sim.data._data
    saved = (model.vis.quality.shadowsize, model.vis.global_.offwidth, model.vis.global_.offheight)
    model.vis.quality.shadowsize = int(shadow_size)
    model.vis.global_.offwidth = max(int(width), saved[1])
    model.vis.global_.offheight = max(int(height), saved[2])
    try:
        renderer = mujoco.Renderer(model, height=int(height), width=int(width))
        try:
            renderer.update_scene(data, camera=camera)
            image = renderer.render().copy()
        finally:
            renderer.close()
    finally:
        model.vis.quality.shadowsize, model.vis.global_.offwidth, model.vis.global_.offheight = saved
    return image


def draw_keypoints(image: np.ndarray, pixels: np.ndarray, labels: Sequence[str] | None = None) -> np.ndarray:
    """Draw numbered markers at ``pixels`` ``(K, 2)`` ``(row, col)`` on a copy of ``image`` ``(H, W, 3)``.

    Each keypoint gets a small dot at its exact pixel and, offset up and to the right so that the
    object stays visible, a red disc with its index (or ``labels[i]``) joined to the dot by a line.
    Points outside the image are drawn clamped to its border, in grey.
    """
    from PIL import Image, ImageDraw, ImageFont

    h, w = image.shape[:2]
    canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    radius = max(6, round(min(h, w) / 32))
    dot = max(2, radius // 3)
    try:
        font = ImageFont.load_default(size=max(9, int(radius * 1.4)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, (row, col) in enumerate(np.asarray(pixels, dtype=np.float64)):
        text = labels[i] if labels is not None else str(i)
        inside = bool(0 <= row < h and 0 <= col < w)
        colour = (220, 30, 30) if inside else (120, 120, 120)
        r, c = float(np.clip(row, dot, h - 1 - dot)), float(np.clip(col, dot, w - 1 - dot))
        lr = float(np.clip(r - 2 * radius, radius, h - 1 - radius))
        lc = float(np.clip(c + 2 * radius, radius, w - 1 - radius))
        draw.line((c, r, lc, lr), fill=(0, 0, 0), width=1)
        draw.ellipse((c - dot, r - dot, c + dot, r + dot), fill=colour, outline=(0, 0, 0))
        draw.ellipse((lc - radius, lr - radius, lc + radius, lr + radius), fill=colour, outline=(0, 0, 0), width=2)
        draw.text((lc, lr), text, fill=(255, 255, 255), font=font, anchor="mm")
    return np.asarray(canvas)


def keypoint_image(env: Any, *, camera: str = "agentview", height: int = 256, width: int = 256,
                   extra_bodies: Sequence[str] = ()) -> tuple[np.ndarray, tuple[str, ...], torch.Tensor]:
    """Camera image with numbered keypoint markers, for a VLM.

    Returns:
        ``(image (H, W, 3) uint8, names, keypoints (K, 3) float32 metres)``.
    """
    names, points = keypoints_for(env, extra_bodies=extra_bodies)
    rs = _robosuite(env)
    image = render_camera(rs.sim, camera, height, width)
    pixels = project_points(rs.sim, camera, points.double().numpy(), height, width)
    return draw_keypoints(image, pixels), names, points
