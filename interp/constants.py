"""Numbers the probes and the analysis commands share, importable without torch (a command's --help and its
defaults answer before torch loads)."""

CLUSTER_THRESHOLD = 0.85  # Nanda et al.: a neuron belongs to frequency k when k's block explains >= 85%
