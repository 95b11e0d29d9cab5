# attack: 10 ** n with n large, via a variable
# rejected-because: integer
def stage_1(keypoints, trajectory):
    n = 100000
    x = 10 ** n
    return trajectory.sum(dim=(1, 2))
