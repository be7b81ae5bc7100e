"""The optimiser, the losses, the schedules and the gradient/parameter transforms."""
