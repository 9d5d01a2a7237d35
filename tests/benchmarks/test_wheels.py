"""benchmarks.wheels: the wheel set the device check carries (computed offline from this venv's metadata)."""
from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks import wheels


@pytest.fixture(scope="module")
def carried():
    return {c.name: c for c in wheels.carried_set()}


def test_the_server_stack_travels_and_the_machines_builds_stay(carried):
    for name in ("diffusers", "transformers", "fastapi", "starlette", "uvicorn", "pydantic", "pydantic-core",
                 "websockets", "python-multipart", "cryptography", "cffi"):
        assert name in carried, name
    for name in ("torch", "numpy", "pillow", "boto3", "botocore", "accelerate", "safetensors", "huggingface-hub",
                 "tokenizers", "triton"):
        assert name not in carried, name


def test_pinned_packages_travel_at_their_pins(carried):
    pins = wheels.serving_pins()
    for name, item in carried.items():
        if name in pins:
            assert item.version == pins[name] and item.why.startswith("pinned")
        else:
            assert item.why.startswith("needed by ")


def test_every_requirement_of_a_carried_package_is_met_there(carried):
    env = wheels.target_environment()
    for item in carried.values():
        for text in metadata.requires(item.name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(env):
                continue
            name = canonicalize_name(requirement.name)
            if name in carried:
                assert requirement.specifier.contains(carried[name].version, prereleases=True), (item.name, text)
            else:
                assert name in wheels.MACHINE_BUILDS or wheels.machine_satisfies(requirement), (item.name, text)


def test_machine_satisfies_checks_known_versions():
    assert wheels.machine_satisfies(Requirement("huggingface-hub>=1.32.0"))
    assert not wheels.machine_satisfies(Requirement("huggingface-hub>=2"))
    assert wheels.machine_satisfies(Requirement("anyio>=4"))  # there, version unknown: trusted
    assert not wheels.machine_satisfies(Requirement("fastapi"))


def test_serving_pins_reject_anything_but_exact_pins(tmp_path):
    path = tmp_path / "req.txt"
    path.write_text("# comment\nfoo==1.0  # why\n\nBar_Baz==2.0\n")
    assert wheels.serving_pins(path) == {"foo": "1.0", "bar-baz": "2.0"}
    path.write_text("foo>=1.0\n")
    with pytest.raises(ValueError, match="not a NAME==VERSION pin"):
        wheels.serving_pins(path)


def test_download_command_is_binary_only_for_the_machines_python(tmp_path):
    command = wheels.download_command([wheels.Carried("fastapi", "0.1", "x")], tmp_path)
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command and "--only-binary=:all:" in command
    assert command[command.index("--python-version") + 1] == "3.12"
    assert "manylinux_2_28_x86_64" in command and command[-1] == "fastapi==0.1"


def test_prune_keeps_exactly_one_version_of_each(tmp_path):
    for name in ("fastapi-0.1-py3-none-any.whl", "fastapi-0.0.9-py3-none-any.whl", "gone-1.0-py3-none-any.whl",
                 "pydantic_core-2.0-cp312-cp312-manylinux_2_17_x86_64.whl"):
        (tmp_path / name).write_bytes(b"")
    removed = wheels.prune(tmp_path, [wheels.Carried("fastapi", "0.1", ""), wheels.Carried("pydantic-core", "2.0", "")])
    assert sorted(p.name for p in removed) == ["fastapi-0.0.9-py3-none-any.whl", "gone-1.0-py3-none-any.whl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fastapi-0.1-py3-none-any.whl",
                                                          "pydantic_core-2.0-cp312-cp312-manylinux_2_17_x86_64.whl"]


def test_budget_counts_the_working_tree_and_the_carried_directory(tmp_path):
    carry = tmp_path / ".whl"
    carry.mkdir()
    (carry / "a.whl").write_bytes(b"\0" * 2**20)
    assert "1.0 MiB; with the working tree 11.0 MiB of 64 MiB" in wheels.check_budget(carry, 10 * 2**20)
    with pytest.raises(SystemExit, match="over the device tool's limit"):
        wheels.check_budget(carry, 63 * 2**20 + 1)


def test_the_working_tree_leaves_room_for_the_wheels():
    tree_mib = wheels.tracked_bytes() / 2**20
    # The carried set measured 27.1 MiB (make gpu-wheels, 2026-12); the tree must leave room for it.
    assert 0 < tree_mib < wheels.TRIP_LIMIT_MIB - 30


def test_every_import_of_the_device_code_travels_or_is_on_the_machine(carried):
    # The rehearsal of the wheel list: every import statement of the code that runs there, lazy ones included.
    imports = wheels.source_imports()
    assert {"diffusers", "fastapi", "torch", "uvicorn"} <= set(imports)
    assert wheels.uncovered(imports, list(carried.values())) == []


def test_an_import_nothing_provides_is_named_with_its_file(tmp_path, carried):
    (tmp_path / "mod.py").write_text("import json\n\ndef f():\n    import fastapi, not_a_wheel.sub\n")
    imports = wheels.source_imports(tmp_path, ("mod.py",))
    assert wheels.uncovered(imports, list(carried.values())) == ["not_a_wheel (mod.py)"]


def test_the_webrtc_stack_stays_home_and_the_server_starts_without_it(carried):
    assert not set(carried) & wheels.WEBRTC_ONLY
    # The device machine has none of it: every phase's modules and the app must import with it absent.
    blocked = ["aiortc", "aioice", "av", "pylibsrtp", "OpenSSL", "pyee", "google_crc32c", "dns", "ifaddr"]
    code = ("import sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None\n"
            f"for name in {list(wheels.PHASE_MODULES) + ['serving.api.app']!r}: __import__(name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=wheels.REPO_ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
