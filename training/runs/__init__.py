"""The run directory: its format, writer, reader (Run), resume, checkpoint policy and milestones."""
