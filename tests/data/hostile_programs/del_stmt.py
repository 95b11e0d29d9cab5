# attack: del
# rejected-because: del
def stage_1(keypoints, trajectory):
    x = 1
    del x
    return trajectory.sum(dim=(1, 2))
