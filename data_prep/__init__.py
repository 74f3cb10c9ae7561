"""Data preparation: frame extraction, benchmark conversion, data validation and the synthetic data set."""
