# attack: torch.eye(100000)
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = torch.eye(100000)
    return trajectory.sum(dim=(1, 2))
