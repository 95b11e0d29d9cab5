# attack: stage_1 and stage_3 without stage_2
# rejected-because: without gaps
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
def stage_3(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
