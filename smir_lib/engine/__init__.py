"""The engine: configuration, training runs that resume, checkpoints, distribution, inference."""
