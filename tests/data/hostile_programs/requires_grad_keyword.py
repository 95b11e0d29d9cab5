# attack: requires_grad= on a new tensor
# rejected-because: requires_grad
def stage_1(keypoints, trajectory):
    x = torch.zeros(3, requires_grad=True)
    return trajectory.sum(dim=(1, 2))
