# attack: torch.zeros(10**10)
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = torch.zeros(10 ** 10)
    return trajectory.sum(dim=(1, 2))
