# attack: trajectory.__class__.__mro__
# rejected-because: __
def stage_1(keypoints, trajectory):
    x = trajectory.__class__.__mro__
    return trajectory.sum(dim=(1, 2))
