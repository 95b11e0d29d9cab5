# attack: lambda Y-combinator recursion
# rejected-because: lambda
def stage_1(keypoints, trajectory):
    f = lambda g: g(g)
    f(f)
    return trajectory.sum(dim=(1, 2))
