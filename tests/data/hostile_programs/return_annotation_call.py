# attack: a return annotation with a call
# rejected-because: annotation
def stage_1(keypoints, trajectory) -> print('x'):
    return trajectory.sum(dim=(1, 2))
