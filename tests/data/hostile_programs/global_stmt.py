# attack: global
# rejected-because: global
def stage_1(keypoints, trajectory):
    global torch
    return trajectory.sum(dim=(1, 2))
