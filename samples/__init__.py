"""Sample models, sample data and the reference architectures used by tests and benchmarks."""
