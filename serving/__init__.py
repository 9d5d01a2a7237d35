"""edge-diffusion inference server: `python -m serving serve` (see docs/serving.md)."""
