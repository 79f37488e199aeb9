"""flywheel.makers.train."""
