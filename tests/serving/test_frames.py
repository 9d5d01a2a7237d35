"""The stream's frame path on the real tiny CPU pipeline: config prepared once, frames deterministic, cancel."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from serving.core.errors import GenerationCancelled
from serving.stream.frames import FrameConfig, FrameRunner, load_stream_vae


@pytest.fixture(scope="module")
def pipe(cpu_backend):
    return cpu_backend.pipe


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory):
    from serving.model.tiny import write_tiny_taesd

    return write_tiny_taesd(tmp_path_factory.mktemp("taesd") / "taesd")


def frame(color=(40, 160, 90), size=(64, 64)) -> Image.Image:
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:] = color
    pixels[:, : size[0] // 2, 0] = 250  # not flat, so encode/decode has something to keep
    return Image.fromarray(pixels)


CONFIG = FrameConfig(prompt="a lighthouse", strength=0.5, steps=4, guidance_scale=0.0, seed=3)


def test_prepare_selects_the_img2img_slice_of_the_schedule(pipe):
    runner = FrameRunner(pipe)
    prepared = runner.prepare(CONFIG, 64, 64)
    # diffusers' img2img: int(steps x strength) steps from the end of the schedule.
    assert len(prepared.timesteps) == 2 and prepared.cfg is False
    a, b = prepared.noise_coeffs
    assert a > 0 and b > 0
    assert tuple(prepared.noise.shape) == (1, 4, 8, 8)
    with_cfg = runner.prepare(FrameConfig(prompt="x", strength=1.0, steps=2, guidance_scale=5.0, seed=3), 64, 64)
    assert with_cfg.cfg and with_cfg.embeds.shape[0] == 2 and len(with_cfg.timesteps) == 2


def test_frames_are_deterministic_and_keep_their_size(pipe):
    runner = FrameRunner(pipe)
    prepared = runner.prepare(CONFIG, 96, 64)
    first = runner.run(prepared, frame(size=(96, 64)), threading.Event())
    again = runner.run(prepared, frame(size=(96, 64)), threading.Event())
    assert first.size == (96, 64) and first.mode == "RGB"
    # The scheduler restarts at the same index every frame and the noise is fixed per seed.
    assert np.array_equal(np.asarray(first), np.asarray(again))
    other_seed = runner.run(runner.prepare(FrameConfig(**{**CONFIG.__dict__, "seed": 4}), 96, 64),
                            frame(size=(96, 64)), threading.Event())
    assert not np.array_equal(np.asarray(first), np.asarray(other_seed))


def test_cancel_stops_a_frame(pipe):
    runner = FrameRunner(pipe)
    prepared = runner.prepare(CONFIG, 64, 64)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        runner.run(prepared, frame(), cancel)


def test_cuda_graphs_are_off_on_cpu(pipe):
    assert FrameRunner(pipe, cuda_graphs=True).cuda_graphs is False


def test_tiny_autoencoder(pipe, taesd_dir):
    vae = load_stream_vae(str(taesd_dir), pipe)
    runner = FrameRunner(pipe, vae)
    assert type(runner.vae).__name__ == "AutoencoderTiny" and runner.scaling == 1.0
    import torch

    convs = [m.weight for m in runner.vae.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    out = runner.run(runner.prepare(CONFIG, 64, 64), frame(), threading.Event())
    assert out.size == (64, 64)
    with pytest.raises(ValueError, match="no config.json"):
        load_stream_vae(str(taesd_dir / "missing"), pipe)


def test_frames_bypass_instance_level_wrappers(pipe, monkeypatch):
    """The GPU path may wrap unet.forward / vae.decode per instance (torch.compile, graph runners) for the REST
    shapes; frames use the classes' own methods, so an unwarmed frame shape can never compile mid-request."""

    def wrapped(*args, **kwargs):
        raise AssertionError("a frame went through an instance-level wrapper")

    monkeypatch.setattr(pipe.unet, "forward", wrapped)
    monkeypatch.setattr(pipe.vae, "decode", wrapped)
    monkeypatch.setattr(pipe.vae, "encode", wrapped)
    runner = FrameRunner(pipe)
    assert runner.run(runner.prepare(CONFIG, 64, 64), frame(), threading.Event()).size == (64, 64)


class FakeGraph:
    """A CUDA graph's contract on CPU: replay re-runs the captured work, which reads the static buffers as they are
    now and writes the static output in place."""

    def __init__(self, run):
        self.run = run
        self.output = None

    def replay(self):
        self.output.copy_(self.run())


class CountingCapture:
    def __init__(self):
        self.calls = 0

    def __call__(self, run):
        self.calls += 1
        graph = FakeGraph(run)
        graph.output = run()
        return graph, graph.output


def test_graph_key_is_what_changes_the_graph(pipe):
    runner = FrameRunner(pipe)
    key = runner.prepare(FrameConfig(prompt="x", strength=0.5, steps=4, guidance_scale=5.0, seed=1), 64, 64).graph_key
    # Slider values that give the same start index and the same CFG state share one graph; prompt and seed too.
    for config in (FrameConfig(prompt="x", strength=0.51, steps=4, guidance_scale=5.0, seed=1),
                   FrameConfig(prompt="y", strength=0.5, steps=4, guidance_scale=7.25, seed=9)):
        assert runner.prepare(config, 64, 64).graph_key == key
    for config, size in ((FrameConfig(prompt="x", strength=0.75, steps=4, guidance_scale=5.0, seed=1), 64),
                         (FrameConfig(prompt="x", strength=0.5, steps=4, guidance_scale=1.0, seed=1), 64),
                         (FrameConfig(prompt="x", strength=0.5, steps=6, guidance_scale=5.0, seed=1), 64),
                         (FrameConfig(prompt="x", strength=0.5, steps=4, guidance_scale=5.0, seed=1), 96)):
        assert runner.prepare(config, size, 64).graph_key != key


def test_frames_never_capture_and_new_slider_values_replay_the_warmed_graph(pipe):
    capture, eager = CountingCapture(), []
    runner = FrameRunner(pipe, cuda_graphs=True, capture=capture)
    runner.on_eager = lambda: eager.append(1)
    assert runner.cuda_graphs
    warm = FrameConfig(prompt="warm-up", strength=0.5, steps=4, guidance_scale=2.0, seed=0)
    runner.warm(runner.prepare(warm, 64, 64))
    assert capture.calls == 1 and runner.captures == 1
    # A new guidance value, strength with the same start index, prompt and seed: the warmed graph, updated buffers.
    for config in (FrameConfig(prompt="a lighthouse", strength=0.51, steps=4, guidance_scale=6.5, seed=3),
                   FrameConfig(prompt="a lighthouse", strength=0.5, steps=4, guidance_scale=3.0, seed=4)):
        prepared = runner.prepare(config, 64, 64)
        replayed = runner.run(prepared, frame(), threading.Event())
        reference = FrameRunner(pipe).run(prepared, frame(), threading.Event())
        assert np.array_equal(np.asarray(replayed), np.asarray(reference))
    assert capture.calls == 1 and eager == []
    # An un-warmed graph key runs eagerly, counted; it never captures at request time.
    cold = runner.prepare(FrameConfig(prompt="x", strength=1.0, steps=4, guidance_scale=0.0, seed=3), 64, 64)
    assert runner.run(cold, frame(), threading.Event()).size == (64, 64)
    assert capture.calls == 1 and eager == [1]


def test_warmup_configs_cover_start_indices_and_cfg_within_the_graph_budget(pipe):
    from serving.stream.frames import MAX_GRAPHS, warmup_configs

    runner = FrameRunner(pipe)
    configs = warmup_configs(steps=2, guidance_scale=0.0)
    keys = [runner.prepare(c, 64, 64).graph_key for c in configs]
    assert keys[0] == runner.prepare(FrameConfig("x", strength=0.5, steps=2, guidance_scale=0.0, seed=0), 64,
                                     64).graph_key  # the stream's default config first
    assert sorted({(k[3], k[4]) for k in keys}) == [(0, False), (0, True), (1, False), (1, True)]
    assert len(warmup_configs(steps=25, guidance_scale=7.5)) == MAX_GRAPHS


@pytest.mark.server_set_only  # the cuda path's optimize_pipeline on the server's diffusers
def test_frames_compile_nothing_on_a_compiled_pipeline(tiny_model, monkeypatch):
    """The REST pipeline compiled and recording (the library default): frames and their warm-up still trace no
    graph, because they call the modules' own methods, never the compiled wrappers."""
    import torch
    from torch._dynamo.utils import counters

    from serving.backends.cuda.optimize import CudaOptions, optimize_pipeline
    from serving.model.loading import load_pipeline

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend="eager", fullgraph=True, dynamic=False))
    compiled = optimize_pipeline(load_pipeline(str(tiny_model), "cpu", "float32"),
                                 CudaOptions(dtype="float32", compile=True))
    torch._dynamo.reset()
    counters.clear()
    capture = CountingCapture()
    runner = FrameRunner(compiled, cuda_graphs=True, capture=capture)
    runner.warm(runner.prepare(CONFIG, 64, 64))
    for guidance in (0.0, 4.0):
        runner.run(runner.prepare(FrameConfig(**{**CONFIG.__dict__, "guidance_scale": guidance}), 64, 64), frame(),
                   threading.Event())
    assert counters["stats"]["unique_graphs"] == 0 and capture.calls == 1


def test_capture_is_serialised_and_thread_local(monkeypatch):
    """serving.backends.cuda.cudagraphs.capture on fakes of torch.cuda: one process-wide lock around the capture,
    which runs in thread_local error mode, after warm-up calls on a side stream."""
    import contextlib

    import torch

    from serving.backends.cuda import cudagraphs

    seen = {}

    @contextlib.contextmanager
    def graph(cuda_graph, pool=None, capture_error_mode="global"):
        seen.update(mode=capture_error_mode, locked=cudagraphs.CAPTURE_LOCK.locked(), pool=pool)
        yield

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: "graph")
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    calls = []
    assert cudagraphs.capture(lambda: calls.append(1) or len(calls), pool="pool") == ("graph", 3)
    assert seen == {"mode": "thread_local", "locked": True, "pool": "pool"} and len(calls) == 3
    assert not cudagraphs.CAPTURE_LOCK.locked()
