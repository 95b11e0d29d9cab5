# attack: a local named with dunders
# rejected-because: __
def stage_1(keypoints, trajectory):
    __x__ = 1
    return trajectory.sum(dim=(1, 2))
