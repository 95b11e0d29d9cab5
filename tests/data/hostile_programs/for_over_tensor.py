# attack: for over a tensor
# rejected-because: range
def stage_1(keypoints, trajectory):
    t = trajectory
    for x in t:
        t = t + x
    return trajectory.sum(dim=(1, 2))
