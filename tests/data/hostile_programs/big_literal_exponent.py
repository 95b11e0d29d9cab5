# attack: 2 ** 100000
# rejected-because: exponent
def stage_1(keypoints, trajectory):
    x = 2 ** 100000
    return trajectory.sum(dim=(1, 2))
