# attack: a bound method hidden in a list, then called
# rejected-because: attribute '.sum'|only allow-listed
def stage_1(keypoints, trajectory):
    return [trajectory.sum][0](dim=(1, 2))
