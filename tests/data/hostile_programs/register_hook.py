# attack: .register_hook
# rejected-because: register_hook
def stage_1(keypoints, trajectory):
    trajectory.register_hook(None)
    return trajectory.sum(dim=(1, 2))
