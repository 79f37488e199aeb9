"""r²SCAN re-check of discoveries (the fidelity ladder)."""
