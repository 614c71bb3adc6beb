"""Shared pieces of every system: config loading, the model interface, training and export."""
