# attack: *args
# rejected-because: \*
def stage_1(keypoints, trajectory):
    a = (1, 2)
    return trajectory.sum(*a)
