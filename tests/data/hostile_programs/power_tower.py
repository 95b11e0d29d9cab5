# attack: 9**9**9
# rejected-because: power
def stage_1(keypoints, trajectory):
    x = 9 ** 9 ** 9
    return trajectory.sum(dim=(1, 2))
