# attack: torch.hub.load
# rejected-because: torch.hub
def stage_1(keypoints, trajectory):
    m = torch.hub.load('x', 'y')
    return trajectory.sum(dim=(1, 2))
