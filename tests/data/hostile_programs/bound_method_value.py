# attack: a bound method taken as a value
# rejected-because: attribute '.sum'
def stage_1(keypoints, trajectory):
    f = trajectory.sum
    return f(dim=(1, 2))
