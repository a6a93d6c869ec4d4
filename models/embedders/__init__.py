"""Embedders map a denoised window to a unit vector; the checkpoint names the one it holds."""
