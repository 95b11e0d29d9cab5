# attack: importlib via name
# rejected-because: importlib
def stage_1(keypoints, trajectory):
    m = importlib.import_module('os')
    return trajectory.sum(dim=(1, 2))
