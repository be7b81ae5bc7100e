"""Tasks: their specs (training.tasks.specs, no torch), builders and the TaskData they build."""
