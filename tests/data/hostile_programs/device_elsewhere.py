# attack: device= naming another device than the trajectory's (e.g. to fill another GPU)
# rejected-because: device= must be the trajectory's device
def stage_1(keypoints, trajectory):
    x = torch.zeros(3, device=keypoints[0:0].device)
    y = torch.ones(3).to(torch.float32)
    z = torch.zeros(3, device=torch.float32)
    return trajectory.sum(dim=(1, 2))
