# attack: walking from a tensor's dtype/device objects to their attributes
# rejected-because: attribute '.is_floating_point'
def stage_1(keypoints, trajectory):
    x = trajectory.dtype.is_floating_point
    return trajectory.sum(dim=(1, 2))
