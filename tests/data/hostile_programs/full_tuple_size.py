# attack: torch.full((50000, 50000), 1.0)
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = torch.full((50000, 50000), 1.0)
    return trajectory.sum(dim=(1, 2))
