# attack: a call in a top-level constant
# rejected-because: top-level constants
X = torch.zeros(10)
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
