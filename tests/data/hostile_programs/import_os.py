# attack: import os
# rejected-because: 'import os'
import os
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
