"""Gradient and parameter transforms: one module per transform, their specs in .specs."""
