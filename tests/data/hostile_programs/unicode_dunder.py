# attack: fullwidth underscores in __class__
# rejected-because: __|syntax
def stage_1(keypoints, trajectory):
    x = trajectory.＿＿class＿＿
    return trajectory.sum(dim=(1, 2))
