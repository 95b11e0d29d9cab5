# attack: .untyped_storage()
# rejected-because: untyped_storage
def stage_1(keypoints, trajectory):
    s = trajectory.untyped_storage()
    return trajectory.sum(dim=(1, 2))
