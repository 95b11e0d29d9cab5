# attack: list doubling
# rejected-because: list
def stage_1(keypoints, trajectory):
    x = [1]
    for i in range(60):
        x = x + x
    return trajectory.sum(dim=(1, 2))
