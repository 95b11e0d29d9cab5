# attack: import socket
# rejected-because: 'import socket'
import socket
def stage_1(keypoints, trajectory):
    return trajectory.sum(dim=(1, 2))
