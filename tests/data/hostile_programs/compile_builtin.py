# attack: compile
# rejected-because: 'compile'
def stage_1(keypoints, trajectory):
    c = compile('1', 'x', 'eval')
    return trajectory.sum(dim=(1, 2))
