# attack: repeated doubling with torch.cat
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = trajectory
    for i in range(60):
        x = torch.cat([x, x])
    return trajectory.sum(dim=(1, 2))
