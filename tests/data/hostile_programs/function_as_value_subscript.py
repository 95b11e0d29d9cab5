# attack: subscripting a torch function object
# rejected-because: attribute 'torch.sum'
def stage_1(keypoints, trajectory):
    f = torch.sum[0]
    return trajectory.sum(dim=(1, 2))
