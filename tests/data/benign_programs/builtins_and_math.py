import math


def stage_1(keypoints, trajectory):
    n = len(trajectory)
    t = trajectory.shape[1]
    angle = math.cos(math.pi / 3)
    values, indices = torch.max(trajectory[:, :, 0], dim=1)
    d = abs(trajectory[:, -1, 1] - keypoints[0, 1])
    bonus = max(values, trajectory[:, 0, 0]) * angle
    return -d + bonus + 0.0 * (n + t)
