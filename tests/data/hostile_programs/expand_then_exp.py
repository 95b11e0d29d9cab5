# attack: .expand to a huge view
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = keypoints[:, :, None, None].expand(-1, -1, 100000, 100000)
    y = torch.exp(x)
    return trajectory.sum(dim=(1, 2))
