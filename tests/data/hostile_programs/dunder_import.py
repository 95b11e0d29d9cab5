# attack: __import__('os')
# rejected-because: __import__
def stage_1(keypoints, trajectory):
    os = __import__('os')
    return trajectory.sum(dim=(1, 2))
