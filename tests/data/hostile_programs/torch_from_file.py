# attack: torch.from_file
# rejected-because: torch.from_file
def stage_1(keypoints, trajectory):
    x = torch.from_file('CANARY_PATH', True, 100)
    return trajectory.sum(dim=(1, 2))
