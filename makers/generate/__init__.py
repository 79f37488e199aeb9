"""flywheel.makers.generate."""
