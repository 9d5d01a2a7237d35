"""python -m loadtest [--stream] ...: the load-testing client."""
from __future__ import annotations

import sys

from loadtest.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) or 0)
