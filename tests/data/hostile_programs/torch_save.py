# attack: torch.save to a file
# rejected-because: torch.save
def stage_1(keypoints, trajectory):
    torch.save(trajectory, 'CANARY_PATH')
    return trajectory.sum(dim=(1, 2))
