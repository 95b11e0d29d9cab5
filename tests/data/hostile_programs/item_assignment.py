# attack: item assignment into the caller's tensor
# rejected-because: item assignment
def stage_1(keypoints, trajectory):
    trajectory[0] = 0.0
    return trajectory.sum(dim=(1, 2))
