# attack: type() to build a class
# rejected-because: 'type'
def stage_1(keypoints, trajectory):
    k = type('X', (), {})
    return trajectory.sum(dim=(1, 2))
