"""Models: their specs (training.models.specs, no torch), one module per model, the batched forwards."""
