"""The process: build the state, load -> warm up -> ready -> serve, drain on SIGTERM (server.py), and the private
metrics app (metrics.py). The top floor: may import every other serving package."""
