# attack: math.floor(1e300) makes a 997-bit integer (then fed to arithmetic or sizes)
# rejected-because: integer over 256 bits
import math


def stage_1(keypoints, trajectory):
    n = math.floor(1e300)
    return trajectory.sum(dim=(1, 2))
