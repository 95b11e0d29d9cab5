import torch.nn.functional as F


def stage_1(keypoints, trajectory):
    z = trajectory[:, :, 2]
    above = F.softplus(z - keypoints[0, 2]).mean(dim=1)
    low = torch.where(z < 0.0, z, torch.zeros_like(z)).sum(dim=1)
    scale = 2.0 if keypoints.shape[0] > 1 else 1.0
    return scale * above + low.clamp(min=-1.0)
