# attack: spectral norm of a 2048x2048 matrix (an SVD in one uninterruptible call)
# rejected-because: matrix norms
def stage_1(keypoints, trajectory):
    a = torch.ones(2048, 2048)
    n = torch.linalg.norm(a, ord=2)
    return trajectory.sum(dim=(1, 2))
