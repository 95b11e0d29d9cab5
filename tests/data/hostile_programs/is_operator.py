# attack: identity test
# rejected-because: comparison 'Is'
def stage_1(keypoints, trajectory):
    if keypoints is None:
        pass
    return trajectory.sum(dim=(1, 2))
