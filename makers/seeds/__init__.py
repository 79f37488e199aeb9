"""flywheel.makers.seeds."""
