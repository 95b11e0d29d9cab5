# attack: .storage()
# rejected-because: storage
def stage_1(keypoints, trajectory):
    s = trajectory.storage()
    return trajectory.sum(dim=(1, 2))
