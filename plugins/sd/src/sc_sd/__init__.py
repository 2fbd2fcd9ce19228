"""Stable Diffusion jobs for stable-core (see jobs.py); heavy imports happen at the first job."""
