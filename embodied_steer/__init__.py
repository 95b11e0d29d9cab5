"""embodied_steer."""
