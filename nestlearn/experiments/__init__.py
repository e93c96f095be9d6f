"""Experiment drivers that are library code (the recipes live in experiments/)."""
