# attack: binding a builtin to a variable
# rejected-because: used as a value
def stage_1(keypoints, trajectory):
    f = max
    return trajectory.sum(dim=(1, 2))
