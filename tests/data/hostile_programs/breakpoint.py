# attack: breakpoint()
# rejected-because: breakpoint
def stage_1(keypoints, trajectory):
    breakpoint()
    return trajectory.sum(dim=(1, 2))
