"""CodaLab submission files for ADD 2023 Track 3."""
