"""Warm starts without Dynamo: every warmed call signature's compiled code, saved whole and loaded at the next start.

The mega-cache (serving.backends.cuda.compilecache) spares inductor its codegen, but Dynamo still traces each
shape at every start: seconds per UNet shape, and a pod warms eight. torch's ahead-of-time compile of one full
graph (`torch.compile(fn, fullgraph=True).aot_compile((args, kwargs))`, torch 2.13
torch/_dynamo/aot_compile.py) returns a function that `save_compiled_function` writes out whole (guards, the
transformed bytecode, inductor's compiled graph) and `torch.compiler.load_compiled_function` reads back: a
start then deserializes each shape's code and calls it, and Dynamo never runs (no frame is traced).

What is compiled per gate and signature is `call_method(owner, name, *args, **kwargs)`: the eager method looked up
on the class (the instance attribute is the gate itself), with the module as an argument, so its parameters are
graph inputs read from the live module at every call and nothing of the weights is serialized. Guards: the gate is
the guard. It routes a function only the exact signature it was compiled for (shape, stride, dtype, device,
requires_grad, plain argument values), so only tensor guards are built (`torch.compiler.keep_tensor_guards_unsafe`:
the module-identity guards Dynamo would add cannot be saved) and their check is switched off
(`disable_guard_check`): a loaded function's guards compare dispatch keys that differ under inference mode
(measured: the reloaded guard rejected the very tensors it was compiled for), and the check is per-call Python. The API is marked experimental in torch 2.13; any failure to compile, save or load one
function falls back to the just-in-time compiled callable for it (logged), which the mega-cache still speeds up.

Not used with CUDA graphs (reduce-overhead, max-autotune, --cuda-graphs): inductor's graph trees live in the
just-in-time path.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from typing import Any

log = logging.getLogger("serving.compilecache")

MANIFEST = "precompiled.json"


def call_method(owner: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """The traced function: ``owner``'s method ``name`` from its class (bypassing the gate on the instance)."""
    return getattr(type(owner), name)(owner, *args, **kwargs)


def entry_file(gate: str, signature: str) -> str:
    """The file name of one gate's function for one signature."""
    return "precompiled-" + hashlib.sha256(f"{gate}\0{signature}".encode()).hexdigest()[:24] + ".bin"


class Precompiled:
    """Per (gate, signature): the ahead-of-time compiled function, compiled in warm-up or loaded from the cache."""

    def __init__(self, mode: str) -> None:
        import torch

        # torch.compile takes a mode or options, not both: the mode's inductor options, plus the guard filter.
        self.options = {**torch._inductor.list_mode_options(mode), "guard_filter_fn":
                        torch.compiler.keep_tensor_guards_unsafe}
        self.mode = mode
        self.functions: dict[tuple[str, str], Any] = {}
        self.compiled_here: set[tuple[str, str]] = set()
        self.failed: set[tuple[str, str]] = set()
        self.load_seconds: list[tuple[str, float]] = []  # (gate, seconds) per function loaded
        self._lock = threading.Lock()

    def function(self, gate: str, owner: Any, method: str, key: Any, args: tuple, kwargs: dict,
                 compile_now: bool) -> Any:
        """The function for this call (None: use the just-in-time path), compiling it first when allowed."""
        entry = (gate, repr(key))
        found = self.functions.get(entry)
        if found is not None or not compile_now or entry in self.failed:
            return found
        import torch

        with self._lock:
            if entry in self.functions:
                return self.functions[entry]
            started = time.perf_counter()
            try:
                compiled = torch.compile(call_method, fullgraph=True, dynamic=False, options=dict(self.options))
                function = compiled.aot_compile(((owner, method, *args), kwargs))
            except Exception as exc:  # noqa: BLE001 - the just-in-time compile still serves this signature
                self.failed.add(entry)
                log.warning("ahead-of-time compile failed; this signature compiles just in time",
                            extra={"fields": {"gate": gate, "error": repr(exc)[:300]}})
                return None
            function.disable_guard_check()
            self.functions[entry] = function
            self.compiled_here.add(entry)
            log.info("compiled ahead of time", extra={"fields": {
                "gate": gate, "seconds": round(time.perf_counter() - started, 3)}})
            return function

    def drop(self, gate: str, key: Any, exc: BaseException) -> None:
        """A function that failed its first run (in warm-up): forget it; the signature compiles just in time."""
        entry = (gate, repr(key))
        self.functions.pop(entry, None)
        self.compiled_here.discard(entry)
        self.failed.add(entry)
        log.warning("ahead-of-time function failed in warm-up; this signature compiles just in time",
                    extra={"fields": {"gate": gate, "error": repr(exc)[:300]}})

    # -- the files the compile cache stores --------------------------------------------------------------------
    def dump(self) -> dict[str, bytes]:
        """File name -> bytes for every function (the manifest included); {} when none can be written."""
        files: dict[str, bytes] = {}
        entries = []
        for (gate, signature), function in sorted(self.functions.items()):
            name = entry_file(gate, signature)
            try:
                files[name] = type(function).serialize(function).serialized_data
            except Exception as exc:  # noqa: BLE001 - that shape compiles at the next start; the rest load
                log.warning("ahead-of-time function not saved", extra={"fields": {"gate": gate,
                                                                                  "error": repr(exc)[:300]}})
                continue
            entries.append({"gate": gate, "signature": signature, "file": name})
        if not entries:
            return {}
        files[MANIFEST] = json.dumps({"mode": self.mode, "entries": entries}, indent=1).encode()
        return files

    def load(self, manifest: bytes, read: Any) -> int:
        """Load every function the manifest names (``read(file name) -> bytes | None``); the number loaded."""
        import torch

        loaded = 0
        for item in json.loads(manifest)["entries"]:
            started = time.perf_counter()
            try:
                blob = read(item["file"])
                if blob is None:
                    raise FileNotFoundError(item["file"])
                function = torch.compiler.load_compiled_function(io.BytesIO(blob))
                function.disable_guard_check()
            except Exception as exc:  # noqa: BLE001 - a missing or foreign file: that shape compiles
                log.warning("ahead-of-time function not loaded", extra={"fields": {
                    "gate": item.get("gate"), "file": item.get("file"), "error": repr(exc)[:300]}})
                continue
            self.functions[(item["gate"], item["signature"])] = function
            self.load_seconds.append((item["gate"], round(time.perf_counter() - started, 3)))
            loaded += 1
        return loaded

    @property
    def unsaved(self) -> bool:
        return bool(self.compiled_here)
