# attack: f-string attribute access
# rejected-because: f-string
def stage_1(keypoints, trajectory):
    s = f'{trajectory.__class__}'
    return trajectory.sum(dim=(1, 2))
