"""Notebook support: parameters and run folders, measurements, figures, explorers, the series runner."""
