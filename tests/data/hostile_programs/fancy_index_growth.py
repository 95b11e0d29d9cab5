# attack: index tensor growth
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    idx = torch.zeros(3000000, dtype=torch.long)
    x = trajectory[idx]
    return trajectory.sum(dim=(1, 2))
