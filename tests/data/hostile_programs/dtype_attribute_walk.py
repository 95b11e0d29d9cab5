# attack: attributes of a dtype object
# rejected-because: attribute 'torch.float32.is_floating_point'
def stage_1(keypoints, trajectory):
    x = torch.float32.is_floating_point
    return trajectory.sum(dim=(1, 2))
