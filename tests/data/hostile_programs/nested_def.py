# attack: a nested function
# rejected-because: nested function
def stage_1(keypoints, trajectory):
    def f():
        return 1
    return trajectory.sum(dim=(1, 2))
