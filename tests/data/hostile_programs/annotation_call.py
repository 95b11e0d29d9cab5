# attack: an annotation that would call open() at definition time
# rejected-because: annotation
def stage_1(keypoints: open('CANARY_PATH', 'w'), trajectory):
    return trajectory.sum(dim=(1, 2))
