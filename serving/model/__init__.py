"""The model on disk and its way onto the device: directory checks, serving.json defaults, loading, weight
prefetch, device initialisation and the tiny random-weight model. May import serving.core only."""
