# attack: .backward() inside the reward
# rejected-because: backward
def stage_1(keypoints, trajectory):
    trajectory.sum().backward()
    return trajectory.sum(dim=(1, 2))
