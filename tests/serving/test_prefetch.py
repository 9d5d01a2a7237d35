from pathlib import Path

from serving.model.prefetch import available_memory_bytes, prefetch, start_prefetch, weight_files


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)


def test_weight_files_largest_first_and_only_weights(tmp_path):
    _write(tmp_path / "unet" / "diffusion_pytorch_model.safetensors", 3000)
    _write(tmp_path / "vae" / "diffusion_pytorch_model.safetensors", 1000)
    _write(tmp_path / "unet" / "config.json", 5000)
    names = [p.relative_to(tmp_path).as_posix() for p in weight_files(tmp_path)]
    assert names == ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]


def test_prefetch_reads_every_byte_within_budget(tmp_path):
    _write(tmp_path / "unet" / "model.safetensors", 20_000_000)
    _write(tmp_path / "text_encoder" / "model.safetensors", 5_000)
    assert prefetch(tmp_path, budget_bytes=10**9) == 20_005_000
    # Over budget, the big file is skipped and the small one still read.
    assert prefetch(tmp_path, budget_bytes=10_000) == 5_000


def test_start_prefetch_ignores_missing_path(tmp_path):
    assert start_prefetch(tmp_path / "missing") is None
    _write(tmp_path / "m" / "unet" / "model.safetensors", 1000)
    thread = start_prefetch(tmp_path / "m")
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_available_memory_parses_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\n")
    assert available_memory_bytes(meminfo) == 12000000 * 1024
    meminfo.write_text("garbage")
    assert available_memory_bytes(meminfo) is None
