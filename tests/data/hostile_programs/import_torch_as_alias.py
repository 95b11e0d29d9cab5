# attack: import torch under another alias
# rejected-because: import torch as t
import torch as t
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
