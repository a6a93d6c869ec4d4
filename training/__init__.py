"""Data loading, noise synthesis, training and evaluation of NeuroAuth models."""
