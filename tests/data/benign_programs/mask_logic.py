def stage_1(keypoints, trajectory):
    z = trajectory[..., 2]
    inside = ((z > 0.1) & (z < 0.5)).float()
    penalty = ((z - 0.3) ** 2) * inside
    return -penalty.sum(dim=1) - 0.1 * trajectory[:, -1, :].norm(dim=-1)
