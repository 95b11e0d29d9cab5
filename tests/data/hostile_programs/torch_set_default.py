# attack: torch.set_default_dtype side effect
# rejected-because: torch.set_default_dtype
def stage_1(keypoints, trajectory):
    torch.set_default_dtype(torch.float64)
    return trajectory.sum(dim=(1, 2))
