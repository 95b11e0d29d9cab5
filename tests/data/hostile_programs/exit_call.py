# attack: exit()
# rejected-because: 'exit'
def stage_1(keypoints, trajectory):
    exit(0)
    return trajectory.sum(dim=(1, 2))
