# attack: match statement
# rejected-because: match
def stage_1(keypoints, trajectory):
    match keypoints:
        case _:
            pass
    return trajectory.sum(dim=(1, 2))
