# attack: .tolist() on a huge tensor
# rejected-because: tolist
def stage_1(keypoints, trajectory):
    x = torch.ones(4000000).tolist()
    return trajectory.sum(dim=(1, 2))
