# attack: two definitions of stage_1 (the second hides the first)
# rejected-because: defined twice
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2)) * 0
