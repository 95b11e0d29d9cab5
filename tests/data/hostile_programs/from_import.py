# attack: from-import of os.system
# rejected-because: from os import
from os import system
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
