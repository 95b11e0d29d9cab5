# attack: stage_01 instead of stage_1
# rejected-because: only stage functions named
def stage_01(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
