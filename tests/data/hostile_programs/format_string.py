# attack: str.format attribute walk
# rejected-because: string literal
def stage_1(keypoints, trajectory):
    s = '{0.__class__.__mro__}'
    return trajectory.sum(dim=(1, 2))
