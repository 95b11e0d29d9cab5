# Reward smoothness with a bounded loop and augmented assignment.
def stage_1(keypoints, trajectory):
    total = torch.zeros(trajectory.shape[0])
    for i in range(3):
        step = trajectory[:, i + 1] - trajectory[:, i]
        total += (step ** 2).sum(dim=-1)
    return -total
