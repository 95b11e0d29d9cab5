# attack: .data_ptr()
# rejected-because: data_ptr
def stage_1(keypoints, trajectory):
    p = trajectory.data_ptr()
    return trajectory.sum(dim=(1, 2))
