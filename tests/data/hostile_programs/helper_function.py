# attack: a helper function (could recurse)
# rejected-because: helper
def helper(x):
    return helper(x)
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
