"""flywheel.launchers."""
