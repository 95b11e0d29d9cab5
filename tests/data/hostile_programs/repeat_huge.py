# attack: .repeat to a huge tensor
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = trajectory.repeat(10000, 1000, 1)
    return trajectory.sum(dim=(1, 2))
