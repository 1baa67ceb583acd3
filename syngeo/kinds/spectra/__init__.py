"""Experiment kinds of the eigenspectra topic (thesis ch. 4 and 6)."""
