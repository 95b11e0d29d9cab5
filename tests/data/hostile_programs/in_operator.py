# attack: membership test (calls __contains__)
# rejected-because: comparison 'In'
def stage_1(keypoints, trajectory):
    if 1 in keypoints:
        pass
    return trajectory.sum(dim=(1, 2))
