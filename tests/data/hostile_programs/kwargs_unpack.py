# attack: **kwargs
# rejected-because: \*\*kwargs
def stage_1(keypoints, trajectory):
    return trajectory.sum(**{'dim': 1})
