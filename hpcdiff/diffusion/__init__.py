"""Diffusion math: schedules, the Gaussian diffusion (forward process, posterior, losses), samplers and
loss weights. Pure tensor code: imports torch and numpy only."""

from hpcdiff.diffusion.gaussian import GaussianDiffusion
from hpcdiff.diffusion.samplers import DEFAULT_STEPS, SAMPLERS, sample
from hpcdiff.diffusion.schedules import make_betas, space_timesteps
from hpcdiff.diffusion.weights import sdf_weights

__all__ = ["DEFAULT_STEPS", "SAMPLERS", "GaussianDiffusion", "make_betas", "sample", "sdf_weights",
           "space_timesteps"]
