# attack: binding the torch namespace to a variable
# rejected-because: used as a value
def stage_1(keypoints, trajectory):
    t = torch
    return trajectory.sum(dim=(1, 2))
