# attack: generator expression
# rejected-because: generator
def stage_1(keypoints, trajectory):
    s = sum(x for x in range(10))
    return trajectory.sum(dim=(1, 2))
