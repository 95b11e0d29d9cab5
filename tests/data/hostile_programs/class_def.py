# attack: a class
# rejected-because: class
class X:
    pass
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
