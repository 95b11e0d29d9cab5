# attack: torch.ones(100000, 100000)
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = torch.ones(100000, 100000)
    return trajectory.sum(dim=(1, 2))
