"""--inventory-file: /v1/endpoints from a JSON file (serving/fleet/static.py)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from serving.core.settings import Settings, SettingsError
from serving.fleet.objects import InventoryError
from serving.fleet.static import StaticInventory, read_inventory_file
from tests.serving.conftest import REPO_ROOT


def write(path, data) -> None:
    # A fresh inode per write, as an editor's save or a ConfigMap update gives: the identity check sees it even
    # when size and mtime happen to match.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def test_items_are_completed_like_the_kubernetes_inventory(tmp_path):
    path = tmp_path / "endpoints.json"
    write(path, [{"url": "https://127.0.0.1:8443/", "zone": "lz-a", "server_name": "inference.example"},
                 {"url": "http://[::1]:8080", "ready": False}])
    items = read_inventory_file(path)
    assert items == [
        {"url": "https://127.0.0.1:8443", "stream_url": "wss://127.0.0.1:8443/v1/stream", "zone": "lz-a",
         "server_name": "inference.example", "ready": True},
        {"url": "http://[::1]:8080", "stream_url": "ws://[::1]:8080/v1/stream", "ready": False},
    ]


@pytest.mark.parametrize(("data", "expected"), [
    ({"url": "http://x:1"}, "JSON list"),
    (["http://x:1"], r"\[0\]: each endpoint must be a JSON object"),
    ([{"url": "http://a:1"}, {"url": "ftp://x:1"}], r"\[1\]\.url: must be http\(s\)://HOST:PORT"),
    ([{"url": "http://x:1/v1"}], r"\[0\]\.url: .*no path"),
    ([{"url": "http://x:99999"}], r"\[0\]\.url: the port"),
    ([{"url": "http://x:1", "ready": "yes"}], r"\[0\]\.ready: must be true or false"),
    ([{"url": "http://x:1", "zone": 3}], r"\[0\]\.zone: must be a string"),
    ([{"url": "http://x:1", "weight": 3}], r"\[0\]\.weight: unknown field"),
])
def test_bad_files_name_the_item_and_field(tmp_path, data, expected):
    path = tmp_path / "endpoints.json"
    write(path, data)
    with pytest.raises(InventoryError, match=expected) as info:
        read_inventory_file(path)
    assert str(path) in str(info.value)


def test_missing_and_unparsable_files_are_clear(tmp_path):
    with pytest.raises(InventoryError, match="cannot read"):
        read_inventory_file(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(InventoryError, match="not valid JSON"):
        read_inventory_file(tmp_path / "bad.json")


def test_edits_apply_without_restart_and_a_broken_edit_keeps_the_last_good_list(tmp_path):
    path = tmp_path / "endpoints.json"
    write(path, [{"url": "http://127.0.0.1:1"}, {"url": "http://127.0.0.1:2"}])
    inventory = StaticInventory(path)
    assert [e["ready"] for e in asyncio.run(inventory.list_endpoints())] == [True, True]
    write(path, [{"url": "http://127.0.0.1:1", "ready": False}, {"url": "http://127.0.0.1:2"}])
    assert [e["ready"] for e in asyncio.run(inventory.list_endpoints())] == [False, True]
    path.write_text("[{not json")
    stale = asyncio.run(inventory.list_endpoints())
    assert [e["ready"] for e in stale] == [False, True] and all(e["stale"] for e in stale)
    write(path, [{"url": "http://127.0.0.1:3"}])
    assert asyncio.run(inventory.list_endpoints()) == [
        {"url": "http://127.0.0.1:3", "stream_url": "ws://127.0.0.1:3/v1/stream", "ready": True}]


def test_file_and_service_are_exclusive():
    with pytest.raises(SettingsError, match="--inventory-file"):
        Settings(model="m", inventory_file="e.json", inventory_service="edge-diffusion")


def test_a_bad_file_fails_the_start_with_exit_2(tmp_path):
    path = tmp_path / "endpoints.json"
    write(path, [{"url": "http://127.0.0.1:8080", "ready": "yes"}])
    result = subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--model", str(tmp_path), "--inventory-file", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = [json.loads(x) for x in result.stderr.splitlines() if "configuration error" in x]
    assert "--inventory-file" in line["msg"] and "[0].ready" in line["msg"]


def test_the_node_address_needs_the_kubernetes_inventory(tmp_path, monkeypatch):
    """--webrtc-public-host node reads the node's ExternalIP, which only the Kubernetes inventory knows: a static file
    is refused at start with the flags to use, not an AttributeError at the first WebRTC offer."""
    from serving.runtime.server import build_state

    path = tmp_path / "endpoints.json"
    write(path, [{"url": "http://127.0.0.1:8080"}])
    monkeypatch.setenv("NODE_NAME", "ip-10-40-128-5.us-west-2.compute.internal")
    with pytest.raises(SettingsError, match="--webrtc-public-host node: needs --inventory-service"):
        build_state(Settings(model=str(tmp_path), inventory_file=str(path), webrtc_public_host="node"))
