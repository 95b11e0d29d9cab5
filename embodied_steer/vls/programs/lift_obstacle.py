"""Default reward program for robosuite Lift with one obstacle (keypoints: 0 cube centre, 1 table-top
centre, 2 the obstacle's centre — envs/lift_obstacle.yaml: a fixed bar, half-extents OBSTACLE_HALF_*).

Stage 1 brings the gripper to the cube *over* the obstacle: the end effector keeps the obstacle's
clearance height (its top plus ABOVE_MARGIN: the fingertips hang below the end effector) until it
is within NEAR of the cube horizontally, then descends; stage 2 raises it above the table over the
cube. In both stages every trajectory point above the obstacle's footprint (grown by SIDE_MARGIN:
the hand's half-thickness and a margin) and below the clearance height is penalised by how far
below it is. Both penalties only push *up*: a penalty that also pushed sideways, out through the
nearest face of a box around the obstacle, trapped the gripper behind and under the bar (tuning
seeds 5000-5005). Rewards are in metres (negative distances), higher is better.
"""
import torch

LIFT_HEIGHT = 0.15   # metres above the table surface the gripper should reach in stage 2
PATH_WEIGHT = 0.1    # weight of the mean horizontal distance along the chunk
OBSTACLE_HALF_X = 0.01  # the obstacle's half-extents along x, y, z (metres)
OBSTACLE_HALF_Y = 0.10
OBSTACLE_HALF_Z = 0.01
SIDE_MARGIN = 0.05   # footprint growth (metres): the hand's half-thickness and a margin
ABOVE_MARGIN = 0.05  # clearance over the obstacle's top (metres): fingertips below the end effector, a margin
NEAR = 0.04          # horizontal distance to the cube (metres) under which the gripper may descend
OBSTACLE_WEIGHT = 5.0


def stage_1(keypoints, trajectory):
    cube = keypoints[0]
    obstacle = keypoints[2]
    clear_z = obstacle[2] + OBSTACLE_HALF_Z + ABOVE_MARGIN
    horizontal = torch.linalg.norm(trajectory[:, :, :2] - cube[:2], dim=-1)
    height_goal = cube[2] + (clear_z - cube[2]) * torch.clamp(horizontal / NEAR, max=1.0)
    too_low = torch.clamp(height_goal - trajectory[:, :, 2], min=0.0).mean(dim=1)
    offset = trajectory - obstacle
    over = ((offset[:, :, 0].abs() < OBSTACLE_HALF_X + SIDE_MARGIN)
            & (offset[:, :, 1].abs() < OBSTACLE_HALF_Y + SIDE_MARGIN)).float()
    under_clearance = (over * torch.clamp(clear_z - trajectory[:, :, 2], min=0.0)).mean(dim=1)
    end = trajectory[:, -1, :]
    final = horizontal[:, -1] + (end[:, 2] - height_goal[:, -1]).abs()
    return -(final + too_low + PATH_WEIGHT * horizontal.mean(dim=1) + OBSTACLE_WEIGHT * under_clearance)


def stage_2(keypoints, trajectory):
    cube = keypoints[0]
    table_z = keypoints[1, 2]
    obstacle = keypoints[2]
    clear_z = obstacle[2] + OBSTACLE_HALF_Z + ABOVE_MARGIN
    offset = trajectory - obstacle
    over = ((offset[:, :, 0].abs() < OBSTACLE_HALF_X + SIDE_MARGIN)
            & (offset[:, :, 1].abs() < OBSTACLE_HALF_Y + SIDE_MARGIN)).float()
    under_clearance = (over * torch.clamp(clear_z - trajectory[:, :, 2], min=0.0)).mean(dim=1)
    end = trajectory[:, -1, :]
    horizontal = torch.linalg.norm(end[:, :2] - cube[:2], dim=-1)
    below = torch.clamp(table_z + LIFT_HEIGHT - end[:, 2], min=0.0)
    return -(horizontal + below + OBSTACLE_WEIGHT * under_clearance)
