"""flywheel.makers.filter."""
