# attack: object.__subclasses__()
# rejected-because: __
def stage_1(keypoints, trajectory):
    s = object.__subclasses__()
    return trajectory.sum(dim=(1, 2))
