"""Data side of the ADD 2023 Track 3 kit: demo corpus, preparation, augmentation, views."""
