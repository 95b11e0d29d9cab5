# attack: import subprocess
# rejected-because: 'import subprocess'
import subprocess
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
