# attack: import inside a stage
# rejected-because: import
def stage_1(keypoints, trajectory):
    import os
    return trajectory.sum(dim=(1, 2))
