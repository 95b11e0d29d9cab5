# attack: print
# rejected-because: 'print'
def stage_1(keypoints, trajectory):
    print(trajectory)
    return trajectory.sum(dim=(1, 2))
