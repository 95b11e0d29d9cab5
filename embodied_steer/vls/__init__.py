"""Reward-guided sampling (VLS): reward programs, their sandbox, the VLM client and keypoints.

Submodules are imported on demand (``from embodied_steer.vls.sandbox import compile_reward_program``)
so that importing the package stays cheap.
"""
