# attack: shape.__class__.__base__
# rejected-because: __
def stage_1(keypoints, trajectory):
    k = trajectory.shape.__class__.__base__
    return trajectory.sum(dim=(1, 2))
