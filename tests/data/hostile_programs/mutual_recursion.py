# attack: stages calling each other
# rejected-because: stage_2
def stage_1(keypoints, trajectory):
    return stage_2(keypoints, trajectory)
def stage_2(keypoints, trajectory):
    return stage_1(keypoints, trajectory)
