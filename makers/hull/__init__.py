"""flywheel.makers.hull."""
