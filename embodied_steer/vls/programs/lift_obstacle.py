"""Default reward program for robosuite Lift with one obstacle (keypoints: 0 cube centre, 1 table-top
centre, 2 the obstacle's centre — envs/lift_obstacle.yaml: a fixed bar, half-extents OBSTACLE_HALF_*).

The stages are Lift's (stage 1: end effector to the cube; stage 2: up over the cube) plus, in both,
a penalty for every point of the trajectory inside a keep-out box around the obstacle: the bar
grown by the gripper's size — a little above it (the fingertips hang ~1-2 cm below the end
effector), a lot below it (the hand and the arm rise ~15 cm above the end effector, so passing
under the bar is no way round). The penalty is the point's depth inside the box (its distance to
the nearest face, metres), so its gradient pushes the point out through the nearest face.
Rewards are in metres (negative distances), higher is better.
"""
import torch

LIFT_HEIGHT = 0.15   # metres above the table surface the gripper should reach in stage 2
PATH_WEIGHT = 0.1    # weight of the mean distance along the chunk (keeps early steps on course)
OBSTACLE_HALF_X = 0.01  # the obstacle's half-extents along x, y, z (metres)
OBSTACLE_HALF_Y = 0.10
OBSTACLE_HALF_Z = 0.01
SIDE_MARGIN = 0.05   # keep-out beyond the obstacle's sides (x, y): the hand's half-thickness and a margin
ABOVE_MARGIN = 0.05  # keep-out above its top face (fingertips below the end effector, and a margin)
BELOW_MARGIN = 0.15  # keep-out below its bottom face (hand and arm above the end effector)
OBSTACLE_WEIGHT = 5.0


def stage_1(keypoints, trajectory):
    # keep-out: mean depth (metres) of the points inside the grown obstacle box, (B,)
    offset = trajectory - keypoints[2]
    dx = OBSTACLE_HALF_X + SIDE_MARGIN - offset[:, :, 0].abs()
    dy = OBSTACLE_HALF_Y + SIDE_MARGIN - offset[:, :, 1].abs()
    up = OBSTACLE_HALF_Z + ABOVE_MARGIN - offset[:, :, 2]
    down = OBSTACLE_HALF_Z + BELOW_MARGIN + offset[:, :, 2]
    depth = torch.minimum(torch.minimum(dx, dy), torch.minimum(up, down))
    keep_out = torch.clamp(depth, min=0.0).mean(dim=1)
    cube = keypoints[0]
    final = torch.linalg.norm(trajectory[:, -1, :] - cube, dim=-1)
    along = torch.linalg.norm(trajectory - cube, dim=-1).mean(dim=1)
    return -(final + PATH_WEIGHT * along + OBSTACLE_WEIGHT * keep_out)


def stage_2(keypoints, trajectory):
    # keep-out: mean depth (metres) of the points inside the grown obstacle box, (B,)
    offset = trajectory - keypoints[2]
    dx = OBSTACLE_HALF_X + SIDE_MARGIN - offset[:, :, 0].abs()
    dy = OBSTACLE_HALF_Y + SIDE_MARGIN - offset[:, :, 1].abs()
    up = OBSTACLE_HALF_Z + ABOVE_MARGIN - offset[:, :, 2]
    down = OBSTACLE_HALF_Z + BELOW_MARGIN + offset[:, :, 2]
    depth = torch.minimum(torch.minimum(dx, dy), torch.minimum(up, down))
    keep_out = torch.clamp(depth, min=0.0).mean(dim=1)
    cube = keypoints[0]
    table_z = keypoints[1, 2]
    end = trajectory[:, -1, :]
    horizontal = torch.linalg.norm(end[:, :2] - cube[:2], dim=-1)
    below = torch.clamp(table_z + LIFT_HEIGHT - end[:, 2], min=0.0)
    return -(horizontal + below + OBSTACLE_WEIGHT * keep_out)
