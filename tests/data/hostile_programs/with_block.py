# attack: with open(...)
# rejected-because: with
def stage_1(keypoints, trajectory):
    with open('CANARY_PATH') as f:
        pass
    return trajectory.sum(dim=(1, 2))
