"""The cuda fast path: CudaBackend (backend.py) with its compile options and numerics (optimize.py), shape policy
(shapes.py), compile cache (compilecache.py), CUDA graphs (cudagraphs.py) and DeepCache (deepcache.py).
May import serving.backends.base, serving.model and serving.core."""
