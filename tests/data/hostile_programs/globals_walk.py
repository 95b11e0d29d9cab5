# attack: function __globals__
# rejected-because: __
def stage_1(keypoints, trajectory):
    x = stage_1.__globals__
    return trajectory.sum(dim=(1, 2))
