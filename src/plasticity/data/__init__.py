"""Pretraining data: document sources -> cached token streams -> fixed-length packed sequences."""
