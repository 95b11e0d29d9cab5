# attack: out= writes into the caller's tensor
# rejected-because: out
def stage_1(keypoints, trajectory):
    x = torch.sum(trajectory, dim=0, out=keypoints)
    return trajectory.sum(dim=(1, 2))
