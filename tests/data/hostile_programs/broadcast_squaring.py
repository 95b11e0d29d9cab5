# attack: outer-product growth by broadcasting
# rejected-because: memory limit
def stage_1(keypoints, trajectory):
    x = trajectory.flatten()
    for i in range(8):
        x = (x[:, None] * x[None, :]).flatten()
    return trajectory.sum(dim=(1, 2))
