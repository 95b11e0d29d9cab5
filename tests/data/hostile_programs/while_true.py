# attack: while True
# rejected-because: while
def stage_1(keypoints, trajectory):
    while True:
        pass
    return trajectory.sum(dim=(1, 2))
