# attack: getattr(trajectory, '__class__')
# rejected-because: getattr
def stage_1(keypoints, trajectory):
    k = getattr(trajectory, 'numpy')
    return trajectory.sum(dim=(1, 2))
