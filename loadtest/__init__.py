"""The HTTP and stream load-testing client (python -m loadtest, also python -m serving bench where this package is
installed). A client of the server's HTTP contract: it imports nothing from serving and is not in the image."""
