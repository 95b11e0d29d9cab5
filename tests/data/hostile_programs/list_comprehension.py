# attack: comprehension
# rejected-because: comprehension
def stage_1(keypoints, trajectory):
    s = [x for x in range(10)]
    return trajectory.sum(dim=(1, 2))
