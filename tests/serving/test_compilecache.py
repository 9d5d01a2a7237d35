"""Compile artifacts: the save/load round trip with a small module compiled by inductor on CPU, the key, and the
local and S3 locations (S3 errors are logged, never raised)."""
from __future__ import annotations

import io
import logging

import pytest
import torch
from torch._dynamo.utils import counters

from serving.backends.cuda.compilecache import ARTIFACTS, DESCRIPTION, CompileCache, cache_key, key_fields

pytestmark = pytest.mark.server_set_only

FIELDS = {"gpu": "NVIDIA H200", "torch": "2.13.0", "triton": "3.6.0", "mode": "default", "shapes": [[64, 64, 0, 1]]}


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, x):
        # A single matmul: inductor emits an extern call, no C++ kernel to build, so the test stays fast.
        return self.proj(x)


def compile_and_run(module, x):
    compiled = torch.compile(module, fullgraph=True, dynamic=False)
    with torch.inference_mode():
        return compiled(x)


@pytest.fixture()
def fresh_inductor():
    import torch._inductor.config as inductor
    from torch._inductor.utils import fresh_inductor_cache

    from torch.compiler._cache import CacheArtifactManager

    torch._dynamo.reset()
    counters.clear()
    CacheArtifactManager.clear()  # artifacts accumulate per process; each test starts like a new one
    with inductor.patch(compile_threads=1):  # no compile worker pool to start
        yield fresh_inductor_cache
    torch._dynamo.reset()


class FakeS3:
    """The two calls CompileCache makes, over a dict; ``fail`` makes every call raise like a denied request."""

    class exceptions:
        class NoSuchKey(Exception):
            pass

    def __init__(self, fail=False):
        self.objects = {}
        self.fail = fail

    def put_object(self, Bucket, Key, Body):
        if self.fail:
            raise PermissionError("AccessDenied")
        self.objects[(Bucket, Key)] = bytes(Body)

    def get_object(self, Bucket, Key):
        if self.fail:
            raise PermissionError("AccessDenied")
        if (Bucket, Key) not in self.objects:
            raise self.exceptions.NoSuchKey(Key)
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}


def test_round_trip_turns_the_next_compile_into_cache_hits(tmp_path, fresh_inductor):
    x = torch.randn(2, 8)
    s3 = FakeS3()
    with fresh_inductor():
        expected = compile_and_run(Small(), x)
        assert counters["inductor"]["fxgraph_cache_miss"] == 1
        cache = CompileCache(FIELDS, str(tmp_path / "local"), "s3://edge-cache/compile", s3_client=lambda: s3)
        assert cache.save()
    assert (tmp_path / "local" / cache.key / ARTIFACTS).is_file()
    assert ("edge-cache", f"compile/{cache.key}/{ARTIFACTS}") in s3.objects
    assert ("edge-cache", f"compile/{cache.key}/{DESCRIPTION}") in s3.objects

    # A new pod: empty inductor caches, nothing in Dynamo; the artifacts come from S3 (no local copy yet).
    from torch.compiler._cache import CacheArtifactManager

    torch._dynamo.reset()
    counters.clear()
    CacheArtifactManager.clear()
    with fresh_inductor():
        fresh = CompileCache(FIELDS, str(tmp_path / "node"), "s3://edge-cache/compile/", s3_client=lambda: s3)
        assert fresh.load() and fresh.loaded_from == "s3"
        got = compile_and_run(Small(), x)
        assert counters["inductor"]["fxgraph_cache_hit"] == 1 and counters["inductor"]["fxgraph_cache_miss"] == 0
        # Everything came from the cache: nothing new to write back.
        s3.objects.clear()
        assert not fresh.save() and s3.objects == {}
    assert torch.equal(got, expected)
    # The S3 copy was kept on the node: the next start there reads it locally.
    assert (tmp_path / "node" / fresh.key / ARTIFACTS).is_file()
    assert CompileCache(FIELDS, str(tmp_path / "node")).load()


def test_without_a_compile_there_is_nothing_to_save(tmp_path, fresh_inductor):
    with fresh_inductor():
        assert not CompileCache(FIELDS, str(tmp_path)).save()
    assert not CompileCache(FIELDS).enabled and not CompileCache(FIELDS).load()


def test_s3_errors_are_logged_and_the_server_compiles(tmp_path, fresh_inductor, caplog):
    broken = FakeS3(fail=True)
    caplog.set_level(logging.WARNING, logger="serving.compilecache")
    with fresh_inductor():
        compile_and_run(Small(), torch.randn(2, 8))
        cache = CompileCache(FIELDS, str(tmp_path), "s3://edge-cache/p/", s3_client=lambda: broken)
        assert cache.save()  # the local copy still got written
        assert not CompileCache(FIELDS, None, "s3://edge-cache/p/", s3_client=lambda: broken).load()
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("compile cache write failed") == 1 and "compile cache read failed" in messages


def test_a_corrupt_blob_is_skipped(tmp_path, caplog):
    cache = CompileCache(FIELDS, str(tmp_path))
    (tmp_path / cache.key).mkdir()
    (tmp_path / cache.key / ARTIFACTS).write_bytes(b"not a cache")
    caplog.set_level(logging.WARNING, logger="serving.compilecache")
    assert not cache.load()
    assert "compile cache artifacts rejected" in [r.getMessage() for r in caplog.records]


def test_the_key_changes_with_every_field():
    base = cache_key(FIELDS)
    assert base.startswith("nvidia-h200-torch2.13.0-")
    for name, value in (("gpu", "NVIDIA L4"), ("torch", "2.14.0"), ("triton", "3.7.0"), ("mode", "max-autotune"),
                        ("shapes", [[64, 64, 1, 1]])):
        assert cache_key({**FIELDS, name: value}) != base
    fields = key_fields("NVIDIA H200", "default", [(64, 64, True, 1)], {"dtype": "float16"}, {"in_channels": 4})
    assert fields["torch"] == torch.__version__ and fields["shapes"] == [[64, 64, True, 1]]
    assert key_fields("NVIDIA H200", "default", [], {}, {"in_channels": 9})["unet"] != fields["unet"]
