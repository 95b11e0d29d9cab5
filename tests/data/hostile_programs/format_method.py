# attack: '{}'.format(...)
# rejected-because: format
def stage_1(keypoints, trajectory):
    s = 'x'.format(trajectory)
    return trajectory.sum(dim=(1, 2))
