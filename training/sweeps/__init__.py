"""Sweeps: named specs and planning, the sweep index, the driver and the chunk executors."""
