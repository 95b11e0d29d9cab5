# attack: for over range(10**9)
# rejected-because: range
def stage_1(keypoints, trajectory):
    s = 0
    for i in range(1000000000):
        s = s + 1
    return trajectory.sum(dim=(1, 2))
