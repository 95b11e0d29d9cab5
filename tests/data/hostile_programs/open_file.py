# attack: open a file for writing
# rejected-because: 'open'
def stage_1(keypoints, trajectory):
    f = open('CANARY_PATH', 'w')
    return trajectory.sum(dim=(1, 2))
