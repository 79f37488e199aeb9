"""flywheel.db."""
