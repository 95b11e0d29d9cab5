"""Default reward program for robosuite Lift (keypoints: 0 cube centre, 1 table-top centre).

Stage 1 brings the gripper to the cube; stage 2 raises it above the table while staying over the
cube. Rewards are in metres (negative distances), higher is better; the gripper's opening and
closing are left to the policy.
"""
import torch

LIFT_HEIGHT = 0.15  # metres above the table surface the gripper should reach in stage 2
PATH_WEIGHT = 0.1   # weight of the mean distance along the chunk (keeps early steps on course)


def stage_1(keypoints, trajectory):
    cube = keypoints[0]
    final = torch.linalg.norm(trajectory[:, -1, :] - cube, dim=-1)
    along = torch.linalg.norm(trajectory - cube, dim=-1).mean(dim=1)
    return -(final + PATH_WEIGHT * along)


def stage_2(keypoints, trajectory):
    cube = keypoints[0]
    table_z = keypoints[1, 2]
    end = trajectory[:, -1, :]
    horizontal = torch.linalg.norm(end[:, :2] - cube[:2], dim=-1)
    below = torch.clamp(table_z + LIFT_HEIGHT - end[:, 2], min=0.0)
    return -(horizontal + below)
