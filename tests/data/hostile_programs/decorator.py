# attack: a decorator
# rejected-because: decorator
@torch.jit.script
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
