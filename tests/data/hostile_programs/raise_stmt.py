# attack: raise SystemExit
# rejected-because: raise
def stage_1(keypoints, trajectory):
    raise SystemExit
    return trajectory.sum(dim=(1, 2))
