"""hpcdiff: generative statistical downscaling of climate fields with conditional diffusion."""

__version__ = "0.1.0"
