# attack: in-place .add_ on the caller's tensor
# rejected-because: add_
def stage_1(keypoints, trajectory):
    trajectory.add_(1.0)
    return trajectory.sum(dim=(1, 2))
