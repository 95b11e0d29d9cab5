# attack: ().__class__.__bases__[0].__subclasses__()
# rejected-because: __
def stage_1(keypoints, trajectory):
    x = ().__class__.__bases__[0].__subclasses__()
    return trajectory.sum(dim=(1, 2))
