# attack: vars()
# rejected-because: 'vars'
def stage_1(keypoints, trajectory):
    g = vars()
    return trajectory.sum(dim=(1, 2))
