"""The cuda fast path's shape policy: compiled or captured code runs only for call signatures seen in warm-up.

torch.compile(dynamic=False) specialises on every input shape, so a new shape at request time would compile for
minutes (blocking the worker far past the request timeout) and, past Dynamo's recompile limit, fail the request
under fullgraph. Every compiled (or CUDA-graph) callable is therefore wrapped in a `Gate`, and a `ShapePolicy` says
per thread what a gate may do:

- ``record``: call the compiled code (compiling or capturing if needed) and remember the call's signature.
  Warm-up runs in this mode; it is also the default for library users such as the GPU benchmark.
- ``fast``: call the compiled code only for a remembered signature; anything else runs the eager module and the
  call is noted, so the request is counted as served off the fast path.
- ``eager``: always the eager module. The server's default: a stream frame or any call outside a request's
  explicit mode can never compile.

A call signature is what Dynamo's tensor guards check (shape, stride, dtype, device, requires_grad) plus the
values of plain Python arguments. After warm-up `seal` also sets Dynamo's process-wide stance to
``eager_on_recompile``: should a guard we do not model ever fail, that call runs eagerly instead of compiling.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterable, Iterator

RECORD, FAST, EAGER = "record", "fast", "eager"
MODES = (RECORD, FAST, EAGER)


def request_key(width: int, height: int, guidance_scale: float, n: int) -> tuple[int, int, bool, int]:
    """What decides a request's tensor shapes: size, classifier-free guidance (doubles the UNet batch) and n."""
    # diffusers runs the unconditional pass only above 1 (do_classifier_free_guidance).
    return (width, height, guidance_scale > 1.0, n)


def key_label(key: tuple[int, int, bool, int]) -> str:
    """A request key as text, e.g. ``512x512 cfg n=1`` (logs, benchmark results)."""
    width, height, guidance, n = key
    return f"{width}x{height} {'cfg' if guidance else 'no-cfg'} n={n}"


def warmed_keys(sizes: Iterable[tuple[int, int]], max_images: int) -> list[tuple[int, int, bool, int]]:
    """The request keys warm-up covers: every size x guidance off/on x 1..max_images images."""
    return [(w, h, cfg, n) for w, h in sizes for cfg in (False, True) for n in range(1, max_images + 1)]


def signature(value: Any) -> Any:
    """A hashable description of a call's arguments, as specific as Dynamo's guards on them."""
    import torch

    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), tuple(value.stride()), value.dtype, value.device.type, value.device.index,
                value.requires_grad)
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(signature(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, signature(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))))
    # Anything else (a scheduler object, a processor) by type: its attributes are not part of the decision.
    return ("obj", type(value).__qualname__)


class ShapePolicy:
    """The per-thread mode the gates follow, the gates themselves, and what fell back in the current call."""

    def __init__(self, default: str = RECORD) -> None:
        if default not in MODES:
            raise ValueError(f"default: {default!r} is not one of {', '.join(MODES)}")
        self.default = default
        self.gates: list[Gate] = []
        self.sealed = False
        # serving.backends.cuda.precompiled.Precompiled, when set: non-graph gates run ahead-of-time compiled code.
        self.precompiled: Any = None
        self._local = threading.local()

    @property
    def mode(self) -> str:
        return getattr(self._local, "mode", None) or self.default

    @contextlib.contextmanager
    def using(self, mode: str) -> Iterator[list[str]]:
        """Run the body in ``mode`` on this thread; the yielded list collects the gates that ran eagerly."""
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        saved = (getattr(self._local, "mode", None), getattr(self._local, "missed", None))
        self._local.mode, self._local.missed = mode, []
        try:
            yield self._local.missed
        finally:
            self._local.mode, self._local.missed = saved

    def note_miss(self, name: str) -> None:
        missed = getattr(self._local, "missed", None)
        if missed is not None and name not in missed:
            missed.append(name)

    def gate(self, name: str, compiled: Callable[..., Any], eager: Callable[..., Any],
             graphs: bool = False) -> "Gate":
        gate = Gate(self, name, compiled, eager, graphs)
        self.gates.append(gate)
        return gate

    @property
    def signatures(self) -> int:
        return sum(len(g.seen) for g in self.gates)

    def seal(self, stance: bool = True) -> None:
        """Warm-up is over: from now on nothing compiles, even a call whose guards we failed to predict."""
        self.sealed = True
        if stance and self.gates:
            import torch

            torch.compiler.set_stance("eager_on_recompile")


class Gate:
    """Routes one compiled callable per call: compiled for recorded signatures, eager otherwise (see module doc)."""

    def __init__(self, policy: ShapePolicy, name: str, compiled: Callable[..., Any], eager: Callable[..., Any],
                 graphs: bool) -> None:
        self.policy = policy
        self.name = name
        self.compiled = compiled
        self.eager = eager
        self.graphs = graphs
        self.seen: set = set()
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mode = self.policy.mode
        if mode == EAGER:
            return self.eager(*args, **kwargs)
        key = signature((args, kwargs))
        if mode == RECORD:
            out = self._run_compiled(args, kwargs, key, compile_now=True)
            with self._lock:
                self.seen.add(key)
            return out
        if key in self.seen:
            return self._run_compiled(args, kwargs, key)
        self.policy.note_miss(self.name)
        return self.eager(*args, **kwargs)

    def _run_compiled(self, args: tuple, kwargs: dict, key: Any, compile_now: bool = False) -> Any:
        if not self.graphs:
            precompiled = self.policy.precompiled
            owner = getattr(self.eager, "__self__", None)
            if precompiled is not None and owner is not None:
                method = self.eager.__func__.__name__
                function = precompiled.function(self.name, owner, method, key, args, kwargs, compile_now)
                if function is not None and not compile_now:
                    return function(owner, method, *args, **kwargs)
                if function is not None:
                    # Warm-up is each function's first run: one that fails there is dropped for the just-in-time path.
                    try:
                        return function(owner, method, *args, **kwargs)
                    except Exception as exc:  # noqa: BLE001 - the just-in-time compile serves this signature
                        precompiled.drop(self.name, key, exc)
            return self.compiled(*args, **kwargs)
        import torch
        from torch.utils import _pytree

        # Inductor's CUDA graphs replay into the same output buffers; schedulers such as PNDM keep earlier UNet
        # outputs across steps, so every output is copied out, and each call starts a new graph-tree step.
        torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(*args, **kwargs)
        return _pytree.tree_map_only(torch.Tensor, torch.clone, out)


def gate_module(policy: ShapePolicy, name: str, module: Any, graphs: bool = False) -> None:
    """Gate a module compiled with ``module.compile()``: its compiled call goes through the policy."""
    compiled = module._compiled_call_impl
    if compiled is None or isinstance(compiled, Gate):
        return
    module._compiled_call_impl = policy.gate(name, compiled, module._call_impl, graphs)
