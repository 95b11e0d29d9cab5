# attack: bytes literal
# rejected-because: bytes
def stage_1(keypoints, trajectory):
    s = b'abc'
    return trajectory.sum(dim=(1, 2))
