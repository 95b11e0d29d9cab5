# attack: calling the result of a call
# rejected-because: only allow-listed functions
def stage_1(keypoints, trajectory):
    x = torch.sum(trajectory)()
    return trajectory.sum(dim=(1, 2))
