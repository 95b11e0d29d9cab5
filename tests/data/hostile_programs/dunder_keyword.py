# attack: a keyword argument with dunders
# rejected-because: __
def stage_1(keypoints, trajectory):
    return trajectory.sum(__dim__=1)
