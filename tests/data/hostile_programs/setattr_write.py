# attack: setattr
# rejected-because: setattr
def stage_1(keypoints, trajectory):
    setattr(trajectory, 'data', keypoints)
    return trajectory.sum(dim=(1, 2))
