# attack: func.__code__ replacement
# rejected-because: __
def stage_1(keypoints, trajectory):
    c = stage_1.__code__
    return trajectory.sum(dim=(1, 2))
