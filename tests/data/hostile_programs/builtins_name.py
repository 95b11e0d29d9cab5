# attack: __builtins__ lookup
# rejected-because: __builtins__
def stage_1(keypoints, trajectory):
    b = __builtins__
    return trajectory.sum(dim=(1, 2))
