# attack: exec
# rejected-because: 'exec'
def stage_1(keypoints, trajectory):
    exec('import os')
    return trajectory.sum(dim=(1, 2))
