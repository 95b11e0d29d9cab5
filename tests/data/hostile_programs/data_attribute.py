# attack: writing through .data
# rejected-because: data
def stage_1(keypoints, trajectory):
    d = trajectory.data
    return trajectory.sum(dim=(1, 2))
