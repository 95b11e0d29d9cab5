# attack: .to('cuda')
# rejected-because: '.to
def stage_1(keypoints, trajectory):
    x = trajectory.to('cuda')
    return trajectory.sum(dim=(1, 2))
