# attack: changing torch's global state for the rest of the process (grad mode, threads)
# rejected-because: torch.set_grad_enabled
def stage_1(keypoints, trajectory):
    torch.set_grad_enabled(False)
    torch.set_num_threads(64)
    return trajectory.sum(dim=(1, 2))
