"""Execution: validate batches, run their chunks, finalise their results."""
