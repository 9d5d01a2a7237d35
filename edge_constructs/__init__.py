"""CDK constructs of the edge-diffusion app (named so it cannot shadow the `constructs` library)."""
