# attack: a stage calling itself
# rejected-because: stage_1
def stage_1(keypoints, trajectory):
    return stage_1(keypoints, trajectory)
