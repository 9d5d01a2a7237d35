"""benchmarks.imports: the -X importtime parser (the probe itself runs in the quick benchmark run)."""
from __future__ import annotations

from benchmarks import imports

SAMPLE = """import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:      2000 |    1500000 |     torch._dynamo
import time:     23337 |    3000000 |   torch
import time:      9999 |    9999999 |     torch._dynamo
[transformers] a warning that is not a timing line
import time:       785 |    3918689 | diffusers
"""


def test_first_import_of_each_profiled_module_counts():
    assert imports.parse_importtime(SAMPLE) == {"torch._dynamo": 1.5, "torch": 3.0, "diffusers": 3.918689}

