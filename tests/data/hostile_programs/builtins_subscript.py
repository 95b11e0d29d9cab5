# attack: __builtins__['open']
# rejected-because: __
def stage_1(keypoints, trajectory):
    f = __builtins__['open']
    return trajectory.sum(dim=(1, 2))
