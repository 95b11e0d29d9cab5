# attack: eval
# rejected-because: 'eval'
def stage_1(keypoints, trajectory):
    return eval('trajectory.sum((1,2))')
