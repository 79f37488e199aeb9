"""Screens of discoveries: layered, Li-ion conductor candidates."""
