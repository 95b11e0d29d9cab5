# attack: cdist of two big point sets
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    a = torch.zeros(100000, 3)
    d = torch.cdist(a, a)
    return trajectory.sum(dim=(1, 2))
