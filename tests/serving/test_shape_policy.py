"""The cuda path's shape policy, proven on CPU: Dynamo's eager backend traces the tiny UNet cheaply and its
counters show whether a request compiled. The backend under test is the real CudaBackend class on a CPU pipeline."""
from __future__ import annotations

import threading

import pytest
import torch
from torch._dynamo.utils import counters

from serving.backends.base import DiffusersBackend, GenerationParams
from serving.backends.cuda.backend import CudaBackend
from serving.model.loading import load_pipeline
from serving.model.config import ModelDefaults
from serving.backends.cuda.optimize import CudaOptions, optimize_pipeline
from serving.backends.cuda.shapes import EAGER, RECORD, ShapePolicy, request_key, warmed_keys

pytestmark = pytest.mark.server_set_only

DEFAULTS = ModelDefaults(width=64, height=64, steps=2, guidance_scale=0.0)


@pytest.fixture(scope="module")
def eager_dynamo():
    """torch.compile through Dynamo with the eager backend (a trace, no codegen); Dynamo state reset around it."""
    real = torch.compile

    def compile_eager(fn, **kwargs):
        return real(fn, backend="eager", fullgraph=kwargs.get("fullgraph", False), dynamic=kwargs.get("dynamic"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", compile_eager)
        torch._dynamo.reset()
        counters.clear()
        yield
        torch.compiler.set_stance("default")
        torch._dynamo.reset()


@pytest.fixture(autouse=True)
def default_stance():
    """Dynamo's stance is process-wide; a sealed policy in one test must not stop the next test's warm-up."""
    torch.compiler.set_stance("default")
    yield
    torch.compiler.set_stance("default")


@pytest.fixture(scope="module")
def warmed(tiny_model, eager_dynamo):
    """A CudaBackend (CPU pipeline, eager Dynamo) warmed at 64x64, guidance off/on, 1-2 images; with the graphs
    Dynamo compiled for it."""
    backend = make_backend(tiny_model)
    fallbacks = []
    backend.on_eager_fallback = fallbacks.append
    # Before warm-up the server's policy is eager: a request compiles nothing.
    backend.generate(params(), threading.Event())
    assert compiles() == 0 and fallbacks == ["shape"]
    backend.warmup([(64, 64)])
    backend.on_eager_fallback = None
    return backend, compiles()


def compiles() -> int:
    """Graphs Dynamo compiled since the last counters.clear()."""
    return counters["stats"]["unique_graphs"]


def make_backend(tiny_model, max_images=2, **options) -> CudaBackend:
    pipe = load_pipeline(str(tiny_model), "cpu", "float32")
    optimize_pipeline(pipe, CudaOptions(dtype="float32", compile=True, **options), default_mode=EAGER)
    return CudaBackend(pipe, DEFAULTS, slots=1, max_images=max_images)


def params(width=64, height=64, guidance=0.0, n=1, seed=0) -> GenerationParams:
    return GenerationParams(prompt="a red cube", width=width, height=height, steps=2, guidance_scale=guidance,
                            seed=seed, n=n)


def test_warmed_keys_are_sizes_times_guidance_times_counts():
    keys = warmed_keys([(64, 64), (96, 64)], 2)
    assert len(keys) == 8 and (96, 64, True, 2) in keys and (64, 64, False, 1) in keys
    assert request_key(64, 64, 1.0, 1) == (64, 64, False, 1)  # guidance 1 runs no unconditional pass


def test_requests_outside_the_warmed_set_never_compile(warmed):
    backend, graphs = warmed
    # UNet batches 1, 2 and 4 (n x 2 with guidance), VAE decode batches 1 and 2.
    assert graphs == 5 and backend.policy.sealed
    fallbacks = []
    backend.on_eager_fallback = fallbacks.append
    for guidance in (0.0, 5.0):
        for n in (1, 2):
            backend.generate(params(guidance=guidance, n=n), threading.Event())
    assert compiles() == graphs and fallbacks == []  # every warmed shape replays what warm-up compiled
    # More new shapes than Dynamo's recompile limit (8): each runs eagerly, none compiles, none fails.
    for side in range(72, 72 + 8 * 10, 8):
        backend.generate(params(width=side, guidance=5.0), threading.Event())
    backend.generate(params(n=3), threading.Event())
    assert compiles() == graphs and fallbacks == ["shape"] * 11
    # The control: the same new shape in record mode does compile, so the counter would have shown it.
    with backend.policy.using(RECORD):
        DiffusersBackend.generate(backend, params(width=72), threading.Event())
    assert compiles() > graphs


def test_regional_compile_with_deepcache_follows_the_same_policy(tiny_model, eager_dynamo):
    backend = make_backend(tiny_model, max_images=1, deepcache_interval=2)
    fallbacks = []
    backend.on_eager_fallback = fallbacks.append
    before = compiles()
    backend.warmup([(64, 64)])
    warmed_graphs = compiles()
    assert warmed_graphs > before
    for side in (64, 72, 80, 88):
        backend.generate(params(width=side, guidance=5.0), threading.Event())
    assert compiles() == warmed_graphs and fallbacks == ["shape"] * 3


def test_fast_and_eager_requests_give_the_same_image(warmed):
    backend, _ = warmed
    fast = backend.generate(params(guidance=5.0, seed=3), threading.Event())[0]
    with backend.policy.using(EAGER):
        eager = DiffusersBackend.generate(backend, params(guidance=5.0, seed=3), threading.Event())[0]
    assert fast.tobytes() == eager.tobytes()


def test_an_unwarmed_call_inside_a_warmed_request_runs_eagerly_and_is_counted(warmed):
    backend, _ = warmed
    fallbacks = []
    backend.on_eager_fallback = fallbacks.append
    gate = backend.policy.gates[0]
    saved = set(gate.seen)
    gate.seen.clear()  # as if a scheduler had handed the UNet an input warm-up never produced
    before = compiles()
    try:
        backend.generate(params(), threading.Event())
    finally:
        gate.seen.update(saved)
        backend.on_eager_fallback = None
    assert fallbacks == ["signature"] and compiles() == before


def test_the_stance_keeps_an_unpredicted_guard_failure_from_compiling(eager_dynamo):
    class Small(torch.nn.Module):  # torch's own modules are on Dynamo's skip list; a user module is traced
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.proj(x).relu()

    policy = ShapePolicy()
    linear = Small()
    linear.compile(fullgraph=True, dynamic=False)
    from serving.backends.cuda.shapes import gate_module

    gate_module(policy, "linear", linear)
    with torch.inference_mode():
        before = compiles()
        linear(torch.randn(2, 4))
        assert compiles() == before + 1
        policy.seal()
        # Past the gate (record mode) but sealed: Dynamo runs the new shape eagerly instead of compiling it.
        out = linear(torch.randn(3, 4))
        assert out.shape == (3, 4) and compiles() == before + 1
        torch.compiler.set_stance("default")
        linear(torch.randn(5, 4))  # the control: unsealed, a new shape compiles
        assert compiles() == before + 2


def test_graph_outputs_are_copied_out(eager_dynamo):
    policy = ShapePolicy()
    buffer = torch.zeros(3)

    def compiled(x):
        buffer.copy_(x)  # a replayed graph writes into the same static output every time
        return (buffer,)

    gate = policy.gate("unet", compiled, compiled, graphs=True)
    first = gate(torch.ones(3))[0]
    gate(torch.full((3,), 2.0))
    assert first.tolist() == [1.0, 1.0, 1.0]  # PNDM's stored output survives the next step


def test_policy_modes_are_per_thread():
    policy = ShapePolicy(default=EAGER)
    seen = []
    with policy.using(RECORD):
        worker = threading.Thread(target=lambda: seen.append(policy.mode))
        worker.start()
        worker.join()
        assert policy.mode == RECORD
    assert seen == [EAGER] and policy.mode == EAGER
    with pytest.raises(ValueError, match="mode: 'fastest'"):
        with policy.using("fastest"):
            pass


def test_library_default_compiles_on_demand(tiny_model, eager_dynamo):
    """The GPU benchmark calls optimize_pipeline without a mode: compiled code runs at every shape, as before."""
    pipe = load_pipeline(str(tiny_model), "cpu", "float32")
    optimize_pipeline(pipe, CudaOptions(dtype="float32", compile=True))
    before = compiles()
    with torch.inference_mode():
        pipe("x", width=56, height=56, num_inference_steps=1, guidance_scale=0.0, output_type="np")
    assert compiles() > before



def test_compile_cache_key_covers_the_warmed_shapes_and_options(warmed, tmp_path):
    from serving.backends.cuda.backend import compile_cache
    from serving.core.settings import Settings

    backend, _ = warmed
    settings = Settings(model="m", device="cuda", compile=True, compile_cache_dir=str(tmp_path), max_images=2)
    options = CudaOptions(dtype="float32", compile=True)
    cache = compile_cache(settings, options, backend.pipe, [(64, 64)])
    assert cache.fields["gpu"] == "cpu" and cache.fields["mode"] == "max-autotune-no-cudagraphs"
    assert len(cache.fields["shapes"]) == 4 and cache.fields["options"]["dtype"] == "float32"
    assert compile_cache(settings, options, backend.pipe, [(64, 64), (96, 96)]).key != cache.key
