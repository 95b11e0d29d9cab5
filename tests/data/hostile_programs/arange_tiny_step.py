# attack: torch.arange with a tiny step
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = torch.arange(0.0, 1.0, 0.000000001)
    return trajectory.sum(dim=(1, 2))
