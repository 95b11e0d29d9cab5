"""Default reward program for robosuite PickPlaceCan (keypoints: 0 can centre, 1 the can's target
spot on the goal bin's floor).

Stage 1 brings the gripper to the can, stage 2 lifts it clear of the bin walls, stage 3 carries
it over its target spot at a safe height and lowers it. Rewards are in metres (negative
distances), higher is better; grasping and releasing are left to the policy.
"""
import torch

CARRY_HEIGHT = 0.15  # metres above the goal bin's floor while carrying (bin walls are lower)
DROP_HEIGHT = 0.06   # metres above the goal bin's floor at the end of stage 3
PATH_WEIGHT = 0.1


def stage_1(keypoints, trajectory):
    can = keypoints[0]
    final = torch.linalg.norm(trajectory[:, -1, :] - can, dim=-1)
    along = torch.linalg.norm(trajectory - can, dim=-1).mean(dim=1)
    return -(final + PATH_WEIGHT * along)


def stage_2(keypoints, trajectory):
    can = keypoints[0]
    carry_z = keypoints[1, 2] + CARRY_HEIGHT
    end = trajectory[:, -1, :]
    horizontal = torch.linalg.norm(end[:, :2] - can[:2], dim=-1)
    below = torch.clamp(carry_z - end[:, 2], min=0.0)
    return -(horizontal + below)


def stage_3(keypoints, trajectory):
    target = keypoints[1]
    end = trajectory[:, -1, :]
    horizontal = torch.linalg.norm(end[:, :2] - target[:2], dim=-1)
    # Stay at carry height until over the target, then come down to the drop height.
    height_goal = target[2] + DROP_HEIGHT + (CARRY_HEIGHT - DROP_HEIGHT) * torch.clamp(horizontal / 0.1, max=1.0)
    low = torch.clamp(target[2] + CARRY_HEIGHT - trajectory[:, :, 2], min=0.0).mean(dim=1)
    return -(horizontal + (end[:, 2] - height_goal).abs() + PATH_WEIGHT * low * (horizontal > 0.05).float())
