def stage_1(keypoints, trajectory):
    w = torch.linspace(0.5, 1.0, trajectory.shape[1])
    d = (trajectory - keypoints[0][None, None, :]).norm(dim=-1)
    return -(d * w).sum(dim=1) / w.sum()
