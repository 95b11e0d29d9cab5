# attack: torch.ops.aten
# rejected-because: torch.ops
def stage_1(keypoints, trajectory):
    x = torch.ops.aten.add(trajectory, 1)
    return trajectory.sum(dim=(1, 2))
