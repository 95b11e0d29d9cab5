# attack: walrus
# rejected-because: :=
def stage_1(keypoints, trajectory):
    if (n := 10) > 5:
        pass
    return trajectory.sum(dim=(1, 2))
