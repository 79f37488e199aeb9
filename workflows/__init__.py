"""flywheel.workflows."""
