# attack: .numpy()
# rejected-because: numpy
def stage_1(keypoints, trajectory):
    return trajectory.numpy()
