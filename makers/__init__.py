"""flywheel.makers."""
