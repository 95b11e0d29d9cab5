# attack: many medium tensors (total memory budget)
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    s = trajectory.sum()
    for i in range(64):
        x = torch.ones(4000000)
        s = s + x.sum()
    return trajectory.sum(dim=(1, 2))
