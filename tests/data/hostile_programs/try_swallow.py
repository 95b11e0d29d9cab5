# attack: try/except swallowing errors
# rejected-because: try
def stage_1(keypoints, trajectory):
    try:
        x = 1 / 0
    except Exception:
        pass
    return trajectory.sum(dim=(1, 2))
