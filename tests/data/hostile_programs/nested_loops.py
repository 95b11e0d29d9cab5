# attack: nested loops 64^3
# rejected-because: iterations
def stage_1(keypoints, trajectory):
    s = 0
    for i in range(64):
        for j in range(64):
            for k in range(64):
                s = s + 1
    return trajectory.sum(dim=(1, 2))
