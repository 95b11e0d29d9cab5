# attack: torch.max(...).__class__
# rejected-because: __
def stage_1(keypoints, trajectory):
    k = torch.max(trajectory, dim=1).__class__
    return trajectory.sum(dim=(1, 2))
