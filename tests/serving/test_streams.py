"""StreamHub: admission, the load signal's stream term, the bundled stream VAE."""
from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from serving.core.settings import Settings
from serving.stream.hub import StreamHub


def hub(tmp_path, **overrides) -> StreamHub:
    settings = Settings(model=str(tmp_path), device="cpu", **overrides)
    return StreamHub(settings, SimpleNamespace(max_concurrency=2), CollectorRegistry())


def test_max_streams_and_draining(tmp_path):
    h = hub(tmp_path, max_streams=2)
    a, b, c = object(), object(), object()
    assert h.try_open(a) and h.try_open(b) and not h.try_open(c)
    h.closed(a)
    assert h.try_open(c)
    h.draining = True
    h.closed(b)
    assert not h.try_open(b)  # no new streams once a drain started
    assert not hub(tmp_path, max_streams=0).try_open(a)  # 0 disables streams


def test_load_counts_each_stream_as_one_busy_slot(tmp_path):
    h = hub(tmp_path)
    base = {"in_flight": 1, "queue_depth": 1, "load": 1.0}
    assert h.load_snapshot(base) == {**base, "streams": 0, "load": 1.0}
    h.try_open(object())
    h.try_open(object())
    # Two idle streams on 2 slots plus 2 REST requests: (2 + 2) / 2.
    assert h.load_snapshot(base)["load"] == 2.0
    # A stream's own frame in the engine is not counted twice.
    h.frames_in_engine = 1
    assert h.load_snapshot(base) == {**base, "streams": 2, "load": 1.5}


def test_stream_vae_defaults_to_the_bundled_one(tmp_path):
    assert hub(tmp_path).stream_vae_path() is None
    (tmp_path / "stream_vae").mkdir()
    (tmp_path / "stream_vae" / "config.json").write_text("{}")
    assert hub(tmp_path).stream_vae_path() == str(tmp_path / "stream_vae")
    assert hub(tmp_path, stream_vae="/elsewhere").stream_vae_path() == "/elsewhere"


class FakeRunner:
    def __init__(self, cuda_graphs):
        self.cuda_graphs = cuda_graphs
        self.shapes = []
        self.warmed = []

    def prepare(self, config, width, height):
        self.shapes.append((width, height))
        return config

    def warm(self, prepared):
        self.warmed.append(prepared)

    @property
    def captures(self):
        return len(self.warmed) if self.cuda_graphs else 0

    graph_keys = ()


def test_warmup_captures_the_default_size_on_cuda_only(tmp_path):
    defaults = SimpleNamespace(width=512, height=512, steps=1, guidance_scale=0.0)
    # Steps 2 (the websocket's default for a 1-step model): start indices 0 and 1, CFG off and on -> 4 graph keys.
    for cuda_graphs, flag, expected in ((True, None, [(512, 512)] * 4), (False, None, []),
                                        (False, "256x256", [(256, 256)]), (True, "256x128", [(256, 128)] * 4)):
        h = hub(tmp_path, **({"stream_warmup_size": flag} if flag else {}))
        h._runner = FakeRunner(cuda_graphs)
        h.warmup(defaults)
        assert h._runner.shapes == expected, (cuda_graphs, flag)
        assert len(h._runner.warmed) == len(expected)
        if expected:  # the stream's default config comes first
            assert h._runner.warmed[0].strength == 0.5 and h._runner.warmed[0].steps == 2


def test_the_runners_eager_frames_reach_the_metric(tmp_path, cpu_backend):
    settings = Settings(model=str(tmp_path), device="cpu")
    h = StreamHub(settings, SimpleNamespace(max_concurrency=2, backend=cpu_backend), CollectorRegistry())
    runner = h.runner()
    runner.on_eager()
    assert h.metrics.eager._value.get() == 1
    runner.codec.on_fallback("decode")
    assert h.metrics.codec_fallback.labels("decode")._value.get() == 1
