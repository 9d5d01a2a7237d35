"""Warm starts without Dynamo (serving/backends/cuda/precompiled.py): a gate's ahead-of-time compiled functions go
through the compile cache, and a start that loads them traces no frame. Inductor on CPU compiles a module with one
matmul (an extern call, no C++ to build) so the round trip takes seconds; the warm-up keys of the real backend
run on the tiny model with Dynamo's eager backend."""
from __future__ import annotations

import io
import json
import logging
import threading

import pytest
import torch
from torch._dynamo.utils import counters

from serving.backends.base import GenerationParams
from serving.backends.cuda.backend import CudaBackend, precompile
from serving.backends.cuda.compilecache import MANIFEST, CompileCache
from serving.backends.cuda.optimize import CudaOptions, optimize_pipeline
from serving.backends.cuda.precompiled import Precompiled
from serving.backends.cuda.shapes import EAGER, FAST, RECORD, ShapePolicy, gate_module, signature
from serving.model.config import ModelDefaults
from serving.model.loading import load_pipeline
from tests.serving.test_compilecache import FakeS3

pytestmark = pytest.mark.server_set_only

FIELDS = {"gpu": "cpu", "torch": torch.__version__, "mode": "default", "shapes": [[8, 8, 0, 1]]}
SHAPES = (torch.randn(1, 8), torch.randn(3, 8))


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.proj(x)


@pytest.fixture()
def fresh_process():
    """Each use is a new process as far as torch can tell: no Dynamo state, counters, artifacts or inductor cache."""
    import torch._inductor.config as inductor
    from torch._inductor.utils import fresh_inductor_cache
    from torch.compiler._cache import CacheArtifactManager

    def reset():
        torch.compiler.set_stance("default")
        torch._dynamo.reset()
        counters.clear()
        CacheArtifactManager.clear()

    reset()
    with inductor.patch(compile_threads=1), fresh_inductor_cache():
        yield reset
    reset()


def start(cache_dir, s3=None):
    """A server's start for the gated module: the policy, the cache with its ahead-of-time functions, loaded."""
    module = Small().eval()
    policy = ShapePolicy(EAGER)
    module.compile(fullgraph=True, dynamic=False)
    gate_module(policy, "small", module)
    policy.precompiled = Precompiled("default")
    cache = CompileCache(FIELDS, str(cache_dir), "s3://bucket/cache" if s3 else None, s3_client=lambda: s3)
    cache.precompiled = policy.precompiled
    cache.load()
    return module, policy, cache


def warm_up(module, policy):
    with torch.inference_mode(), policy.using(RECORD):
        for x in SHAPES:
            module(x)
    policy.seal()


def frames_traced() -> int:
    return counters["frames"]["total"] + counters["stats"]["unique_graphs"]


def test_a_warm_start_loads_each_shape_without_tracing(tmp_path, fresh_process):
    module, policy, cache = start(tmp_path)
    warm_up(module, policy)
    assert counters["stats"]["unique_graphs"] == len(SHAPES)  # the cold start compiled each shape once
    assert cache.save()
    files = sorted(p.name for p in (tmp_path / cache.key).iterdir())
    assert MANIFEST in files and sum(name.startswith("precompiled-") for name in files) == len(SHAPES)

    fresh_process()  # the next pod on the node
    module, policy, cache = start(tmp_path)
    loaded = policy.precompiled.load_seconds
    assert [gate for gate, _ in loaded] == ["small"] * len(SHAPES)
    warm_up(module, policy)
    with torch.inference_mode(), policy.using(FAST) as missed:
        outputs = [module(x) for x in SHAPES]
    assert frames_traced() == 0 and missed == []
    for x, out in zip(SHAPES, outputs):
        assert torch.allclose(out, Small().eval()(x), atol=1e-6)
    # Nothing new compiled: nothing to write back.
    assert not policy.precompiled.unsaved and not cache.save()


def test_functions_come_from_s3_and_stay_on_the_node(tmp_path, fresh_process):
    s3 = FakeS3()
    module, policy, cache = start(tmp_path / "first", s3)
    warm_up(module, policy)
    assert cache.save()
    names = [key.rsplit("/", 1)[1] for _, key in s3.objects]
    functions = [i for i, name in enumerate(names) if name.startswith("precompiled-")]
    # The manifest after the functions: it never names a file that is not there yet.
    assert len(functions) == len(SHAPES) and names.index(MANIFEST) > max(functions)

    fresh_process()
    module, policy, cache = start(tmp_path / "node", s3)
    warm_up(module, policy)
    assert frames_traced() == 0
    assert (tmp_path / "node" / cache.key / MANIFEST).is_file()


def test_a_corrupt_function_file_costs_only_its_shape(tmp_path, fresh_process, caplog):
    module, policy, cache = start(tmp_path)
    warm_up(module, policy)
    cache.save()
    manifest = json.loads((tmp_path / cache.key / MANIFEST).read_text())
    (tmp_path / cache.key / manifest["entries"][0]["file"]).write_bytes(b"not a function")

    fresh_process()
    with caplog.at_level(logging.WARNING, logger="serving.compilecache"):
        module, policy, cache = start(tmp_path)
    assert len(policy.precompiled.load_seconds) == len(SHAPES) - 1
    assert any(r.getMessage() == "ahead-of-time function not loaded" for r in caplog.records)
    warm_up(module, policy)
    assert counters["stats"]["unique_graphs"] == 1  # only the damaged shape compiled again
    assert policy.precompiled.unsaved and cache.save()


def test_graph_modes_keep_the_just_in_time_path():
    assert precompile(ShapePolicy(), CudaOptions(compile=True, compile_mode="reduce-overhead"), "cuda") is None
    assert precompile(None, CudaOptions(compile=True), "cuda") is None
    policy = ShapePolicy()
    assert precompile(policy, CudaOptions(compile=True), "cpu") is policy.precompiled is not None


@pytest.fixture()
def eager_dynamo():
    real = torch.compile

    def compile_eager(fn, **kwargs):
        return real(fn, backend="eager", fullgraph=kwargs.get("fullgraph", False), dynamic=kwargs.get("dynamic"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", compile_eager)
        torch._dynamo.reset()
        yield
        torch.compiler.set_stance("default")
        torch._dynamo.reset()


def test_warm_up_of_chosen_keys_times_each_and_leaves_the_servers_cache_alone(tiny_model, eager_dynamo, tmp_path):
    pipe = load_pipeline(str(tiny_model), "cpu", "float32")
    optimize_pipeline(pipe, CudaOptions(dtype="float32", compile=True), default_mode=EAGER)
    backend = CudaBackend(pipe, ModelDefaults(width=64, height=64, steps=2, guidance_scale=0.0), max_images=2)
    backend.compile_cache = CompileCache(FIELDS, str(tmp_path))
    backend.warmup([(64, 64)], keys=[(64, 64, False, 1)])
    assert list(backend.warmup_seconds) == ["64x64 no-cfg n=1"] and backend.warmup_seconds["64x64 no-cfg n=1"] > 0
    assert backend.fast_keys == {(64, 64, False, 1)}
    assert not (tmp_path / backend.compile_cache.key).exists()  # a subset of the server's keys is not its cache
    params = GenerationParams(prompt="a", width=64, height=64, steps=2, guidance_scale=7.5, seed=0)
    fallbacks = []
    backend.on_eager_fallback = fallbacks.append
    backend.generate(params, threading.Event())
    assert fallbacks == ["shape"]


def test_a_function_round_trips_through_bytes(fresh_process):
    module, policy, _ = start_without_cache()
    warm_up(module, policy)
    (entry, function), *_ = policy.precompiled.functions.items()
    blob = type(function).serialize(function).serialized_data
    fresh_process()
    again = torch.compiler.load_compiled_function(io.BytesIO(blob))
    x = SHAPES[0]
    with torch.inference_mode():
        # Why the gate, not the guards, decides: reloaded, they reject the tensors the function was compiled for.
        with pytest.raises(RuntimeError, match="dispatch key set mismatch"):
            again(module, "_call_impl", x)
        again.disable_guard_check()
        assert torch.allclose(again(module, "_call_impl", x), module.proj(x), atol=1e-6)
    assert frames_traced() == 0


def start_without_cache():
    module = Small().eval()
    policy = ShapePolicy(EAGER)
    module.compile(fullgraph=True, dynamic=False)
    gate_module(policy, "small", module)
    policy.precompiled = Precompiled("default")
    return module, policy, None


def test_a_function_that_fails_its_first_run_leaves_the_signature_to_the_just_in_time_path(caplog):
    module, policy, _ = start_without_cache()

    class Broken:
        def __call__(self, *args, **kwargs):
            raise RuntimeError("kernel launch failed")

    x = SHAPES[0]
    policy.precompiled.functions[("small", repr(signature(((x,), {}))))] = Broken()
    with caplog.at_level(logging.WARNING, logger="serving.compilecache"), torch.inference_mode(), \
            policy.using(RECORD):
        out = module(x)
    assert torch.allclose(out, module.proj(x), atol=1e-6)
    assert not policy.precompiled.functions and len(policy.precompiled.failed) == 1
    assert any("failed in warm-up" in r.getMessage() for r in caplog.records)
