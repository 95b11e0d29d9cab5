# attack: .to('cuda')
# rejected-because: \.to\(\): device=
def stage_1(keypoints, trajectory):
    x = trajectory.to('cuda')
    return trajectory.sum(dim=(1, 2))
