# attack: big matrix products
# rejected-because: work limit|memory limit
def stage_1(keypoints, trajectory):
    a = torch.ones(2000, 2000)
    b = a @ a
    return trajectory.sum(dim=(1, 2))
