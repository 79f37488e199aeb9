"""flywheel.makers.relax."""
