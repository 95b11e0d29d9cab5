# Closest approach over the whole trajectory, through tensor methods and a torch.return_types value.
def stage_1(keypoints, trajectory):
    d = (trajectory - keypoints[1]).norm(dim=-1)
    best = d.min(dim=1).values
    return -best
