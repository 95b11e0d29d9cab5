# attack: globals()
# rejected-because: 'globals'
def stage_1(keypoints, trajectory):
    g = globals()
    return trajectory.sum(dim=(1, 2))
