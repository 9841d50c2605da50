"""siamdiff: a reproducible DVC pipeline for Noise-Consistent Siamese-Diffusion (CVPR 2025)."""
__version__ = "0.1.0"
