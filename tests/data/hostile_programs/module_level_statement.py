# attack: an if statement at top level
# rejected-because: top level
if True:
    pass
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
