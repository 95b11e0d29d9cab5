"""Default reward program for robosuite PickPlaceCan (keypoints: 0 can centre, 1 the can's target
spot on the goal bin's floor).

Stage 1 brings the gripper to the can *from above* (it stays HOVER over the can's height until it
is within a few centimetres horizontally: a low, sideways approach knocks the can over), stage 2
lifts it to the carry height, stage 3 carries it over its target spot at that height and lowers
it. Rewards are in metres (negative distances), higher is better, and each stage's reward reaches
the default stage thresholds (-0.025, 0, 0) when the stage is done; grasping and releasing are
left to the policy.
"""
import torch

HOVER = 0.10          # metres above the can's centre while the gripper is not yet over it
NEAR = 0.04           # horizontal distance (metres) under which the gripper may descend
CARRY_HEIGHT = 0.25   # metres above the goal bin's floor while carrying (a held can clears the 0.1 m bin walls)
DROP_HEIGHT = 0.10    # metres above the goal bin's floor at the end of stage 3
LIFT_TOLERANCE = 0.02  # horizontal drift (metres) allowed while lifting
PATH_WEIGHT = 0.1


def stage_1(keypoints, trajectory):
    can = keypoints[0]
    horizontal = torch.linalg.norm(trajectory[:, :, :2] - can[:2], dim=-1)
    height_goal = can[2] + HOVER * torch.clamp(horizontal / NEAR, max=1.0)
    too_low = torch.clamp(height_goal - trajectory[:, :, 2], min=0.0).mean(dim=1)
    end = trajectory[:, -1, :]
    final = horizontal[:, -1] + (end[:, 2] - height_goal[:, -1]).abs()
    return -(final + too_low + PATH_WEIGHT * horizontal.mean(dim=1))


def stage_2(keypoints, trajectory):
    can = keypoints[0]
    carry_z = keypoints[1, 2] + CARRY_HEIGHT
    end = trajectory[:, -1, :]
    horizontal = torch.linalg.norm(end[:, :2] - can[:2], dim=-1)
    below = torch.clamp(carry_z - end[:, 2], min=0.0)
    return -(torch.clamp(horizontal - LIFT_TOLERANCE, min=0.0) + below)


def stage_3(keypoints, trajectory):
    target = keypoints[1]
    horizontal = torch.linalg.norm(trajectory[:, :, :2] - target[:2], dim=-1)
    # Stay at carry height until over the target, then come down to the drop height.
    height_goal = target[2] + DROP_HEIGHT + (CARRY_HEIGHT - DROP_HEIGHT) * torch.clamp(horizontal / 0.1, max=1.0)
    too_low = torch.clamp(height_goal - trajectory[:, :, 2], min=0.0).mean(dim=1)
    end = trajectory[:, -1, :]
    return -(horizontal[:, -1] + (end[:, 2] - height_goal[:, -1]).abs() + too_low)
