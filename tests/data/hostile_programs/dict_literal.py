# attack: dict literal
# rejected-because: dict
def stage_1(keypoints, trajectory):
    s = {'a': 1}
    return trajectory.sum(dim=(1, 2))
