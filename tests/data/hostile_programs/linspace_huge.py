# attack: torch.linspace with 10**9 steps
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = torch.linspace(0, 1, 1000000000)
    return trajectory.sum(dim=(1, 2))
