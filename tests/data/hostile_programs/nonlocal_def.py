# attack: nonlocal in nested function
# rejected-because: nested function
def stage_1(keypoints, trajectory):
    x = 1
    def g():
        nonlocal x
        x = 2
    return trajectory.sum(dim=(1, 2))
