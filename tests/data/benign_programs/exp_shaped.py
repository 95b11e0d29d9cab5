SIGMA = 0.05


def stage_1(keypoints, trajectory):
    d = torch.norm(trajectory[:, -1] - keypoints[0], dim=-1)
    return torch.exp(-d / SIGMA)
