# Reach the can (keypoint 0), lift it, carry it over the bin (keypoint 1).
LIFT = 0.15


def stage_1(keypoints, trajectory):
    return -torch.linalg.vector_norm(trajectory[:, -1] - keypoints[0], dim=-1)


def stage_2(keypoints, trajectory):
    goal = keypoints[0] + torch.tensor([0.0, 0.0, LIFT])
    return -torch.linalg.vector_norm(trajectory[:, -1] - goal, dim=-1)


def stage_3(keypoints, trajectory):
    goal = keypoints[1] + torch.tensor([0.0, 0.0, LIFT])
    final = trajectory[:, -1]
    horizontal = (final[:, :2] - goal[:2]).norm(dim=-1)
    return -horizontal - (final[:, 2] - goal[2]).abs()
