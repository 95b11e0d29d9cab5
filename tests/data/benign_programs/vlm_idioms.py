"""Idioms that language models write all the time: device/dtype plumbing, .to(), tuple unpacking of
shapes, torch.min(...)[0], keepdim, float('inf'), comments and type hints."""
import torch
import torch.nn.functional as F

APPROACH_HEIGHT: float = 0.05  # metres above the object


def stage_1(keypoints: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    B, T, _ = trajectory.shape
    offset = torch.tensor([0.0, 0.0, APPROACH_HEIGHT], device=trajectory.device, dtype=trajectory.dtype)
    target = keypoints[0].to(trajectory.dtype) + offset
    dists = torch.norm(trajectory - target.view(1, 1, 3), dim=-1, keepdim=True).squeeze(-1)  # (B, T)
    closest = torch.min(dists, dim=1)[0]
    final = dists[:, T - 1]
    weights = torch.ones(T, device=trajectory.device).type_as(trajectory)
    smooth = (weights * F.relu(dists - 0.5)).sum(dim=1)
    cap = torch.clamp(final, max=float('inf'))
    return -(0.5 * closest + 0.5 * cap) - 0.0 * smooth + torch.zeros(B, device=trajectory.device)
