# attack: a generator stage
# rejected-because: yield
def stage_1(keypoints, trajectory):
    yield trajectory
    return trajectory.sum(dim=(1, 2))
