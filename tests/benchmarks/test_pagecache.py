"""benchmarks.pagecache: eviction without root, verified by mincore, and the raw read."""
from __future__ import annotations

from benchmarks import pagecache


def test_evict_leaves_nothing_cached_and_a_read_brings_it_back(tmp_path):
    files = []
    for index, size in enumerate((0, 1, pagecache.READ_CHUNK + 7)):
        path = tmp_path / "m" / f"f{index}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * size)
        files.append(path)
    assert pagecache.files_under(tmp_path / "m") == files
    pagecache.evict(files)  # written moments ago: dirty pages are flushed first, then dropped
    assert pagecache.resident_fraction(files) == 0.0
    assert pagecache.raw_read_s(files) >= 0
    assert pagecache.resident_fraction(files) == 1.0


def test_empty_set_is_not_resident(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert pagecache.resident_fraction([tmp_path / "empty"]) == 0.0
