# attack: repeated squaring of an int
# rejected-because: integer
def stage_1(keypoints, trajectory):
    x = 3
    for i in range(40):
        x = x * x
    return trajectory.sum(dim=(1, 2))
