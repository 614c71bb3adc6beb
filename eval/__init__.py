"""Scoring: the ADD 2023 Track 3 open-set metric."""
