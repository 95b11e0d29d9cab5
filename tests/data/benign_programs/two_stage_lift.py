"""Reach keypoint 0, then rise HEIGHT above it."""
import torch

HEIGHT = 0.1
OFFSET = (0.0, 0.0, HEIGHT)


def stage_1(keypoints, trajectory):
    return -((trajectory[:, -1] - keypoints[0]) ** 2).sum(dim=-1)


def stage_2(keypoints: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    target = keypoints[0] + torch.tensor(OFFSET)
    err = trajectory[:, -1] - target
    return -(err * err).sum(dim=-1)
