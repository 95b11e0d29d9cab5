# attack: attribute assignment
# rejected-because: attribute assignment
def stage_1(keypoints, trajectory):
    trajectory.requires_grad = False
    return trajectory.sum(dim=(1, 2))
