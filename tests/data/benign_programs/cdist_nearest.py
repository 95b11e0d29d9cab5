def stage_1(keypoints, trajectory):
    final = trajectory[:, -1, :]
    d = torch.cdist(final, keypoints)
    return -torch.amin(d, dim=1)
