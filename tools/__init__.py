"""Developer tools of the edge-diffusion app."""
