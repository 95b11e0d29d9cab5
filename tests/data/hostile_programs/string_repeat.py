# attack: 'a' * 10**9
# rejected-because: str
def stage_1(keypoints, trajectory):
    x = 'a' * 1000000000
    return trajectory.sum(dim=(1, 2))
