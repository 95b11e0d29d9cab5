# attack: a default argument that opens a file
# rejected-because: signature
def stage_1(keypoints, trajectory=open('x')):
    return trajectory.sum(dim=(1, 2))
