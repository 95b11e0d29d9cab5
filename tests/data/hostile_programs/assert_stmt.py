# attack: assert
# rejected-because: assert
def stage_1(keypoints, trajectory):
    assert False
    return trajectory.sum(dim=(1, 2))
