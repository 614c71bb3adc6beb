"""Decisions and fusion: read only the exported score files, never a network."""
