# attack: torch.__dict__
# rejected-because: __
def stage_1(keypoints, trajectory):
    d = torch.__dict__
    return trajectory.sum(dim=(1, 2))
