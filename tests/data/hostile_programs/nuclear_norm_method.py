# attack: nuclear norm via the .norm method
# rejected-because: matrix norms
def stage_1(keypoints, trajectory):
    a = torch.ones(2048, 2048)
    n = a.norm(p='nuc')
    return trajectory.sum(dim=(1, 2))
