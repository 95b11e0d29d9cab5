# attack: 1 << 10**9
# rejected-because: LShift
def stage_1(keypoints, trajectory):
    x = 1 << 1000000000
    return trajectory.sum(dim=(1, 2))
