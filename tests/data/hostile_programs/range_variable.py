# attack: range bound from a variable
# rejected-because: literal
def stage_1(keypoints, trajectory):
    n = 10
    for i in range(n):
        n = n + 1
    return trajectory.sum(dim=(1, 2))
