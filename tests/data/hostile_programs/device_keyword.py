# attack: device= on a new tensor
# rejected-because: device
def stage_1(keypoints, trajectory):
    x = torch.zeros(3, device='cuda')
    return trajectory.sum(dim=(1, 2))
