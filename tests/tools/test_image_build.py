"""tools/image_build.py: the buildah copy of the Dockerfile, the stand-in's tag, and how pip is pointed."""
from __future__ import annotations

import difflib
import re
import subprocess
from pathlib import Path

import pytest

from tests.buildspecs.dockerfile_parser import parse_dockerfile
from tools import image_base, image_build

DOCKERFILE_TEXT = image_build.DOCKERFILE.read_text()


def test_the_buildah_copy_only_drops_copy_link():
    generated = image_build.buildah_dockerfile(DOCKERFILE_TEXT)
    original_lines, generated_lines = DOCKERFILE_TEXT.splitlines(), generated.splitlines()
    assert len(original_lines) == len(generated_lines)
    changed = [(a, b) for a, b in zip(original_lines, generated_lines) if a != b]
    copy_link = [line for line in original_lines if re.match(r"\s*COPY\s+--link\s", line)]
    assert changed and len(changed) == len(copy_link), "every COPY --link line, and nothing else, changes"
    for before, after in changed:
        assert re.sub(r"^(\s*COPY\s+)--link\s+", r"\1", before) == after
    # Instructions other than COPY --link, comments that mention the flag included, stay as they are.
    assert "--link" in generated and not re.search(r"^\s*COPY\s+--link", generated, re.MULTILINE)
    diff = [d for d in difflib.ndiff(original_lines, generated_lines) if d[:1] in "+-"]
    assert all("COPY" in d for d in diff)


def test_the_buildah_copy_parses_to_the_same_stages():
    original, generated = parse_dockerfile(DOCKERFILE_TEXT), parse_dockerfile(
        image_build.buildah_dockerfile(DOCKERFILE_TEXT))
    assert [(s.name, s.base) for s in original.stages] == [(s.name, s.base) for s in generated.stages]
    assert original.global_args == generated.global_args


def test_the_stand_in_is_tagged_with_exactly_the_dockerfile_default():
    assert image_build.global_arg(DOCKERFILE_TEXT, "PYTHON_IMAGE") == \
        parse_dockerfile(DOCKERFILE_TEXT).global_args["PYTHON_IMAGE"]
    with pytest.raises(ValueError, match="NOPE"):
        image_build.global_arg(DOCKERFILE_TEXT, "NOPE")


def test_the_stand_in_is_bookworm_with_the_official_python_minor():
    reference = image_build.global_arg(DOCKERFILE_TEXT, "PYTHON_IMAGE")
    assert reference.endswith(f"-slim-{image_base.SUITE}")
    minor = re.search(r":(\d+\.\d+)\.", reference).group(1)
    assert f"python{minor}" in image_base.PACKAGES


def test_host_pip_config_lets_the_environment_win():
    listing = "\n".join([
        ":env:.find-links='/opt/wheels'",
        "global.find-links='/elsewhere'",
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'",
        "download.index-url='https://ignored.example/simple'",
        "global.cert='/etc/ssl/certs/ca-certificates.crt'",
    ])

    def fake_run(*_, **__):
        return subprocess.CompletedProcess([], 0, stdout=listing + "\n")

    settings = image_build.host_pip_config(run=fake_run)
    assert settings == {"find-links": "/opt/wheels", "extra-index-url": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
                        "cert": "/etc/ssl/certs/ca-certificates.crt"}


def test_pip_build_args_mount_local_sources_read_only(tmp_path):
    for path in ("pypi/simple", "pypi/files", "wheels"):
        (tmp_path / path).mkdir(parents=True)
    cert = tmp_path / "ca.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    args, volumes = image_build.pip_build_args({
        "extra-index-url": f"file://{tmp_path}/pypi/simple",
        "find-links": str(tmp_path / "wheels"),
        "cert": str(cert),
    })
    assert args == {
        "PIP_INDEX_URL": image_build.PUBLIC_INDEX, "TORCH_CPU_INDEX": image_build.PUBLIC_INDEX,
        "PIP_EXTRA_INDEX_URL": f"file://{tmp_path}/pypi/simple", "PIP_FIND_LINKS": str(tmp_path / "wheels"),
        "PIP_CERT": image_build.CERT_MOUNT,
    }
    # The index's files sit beside "simple" (relative links): its parent is what gets mounted.
    assert sorted(volumes) == sorted([f"{tmp_path}/pypi:{tmp_path}/pypi:ro", f"{tmp_path}/wheels:{tmp_path}/wheels:ro",
                                      f"{cert}:{image_build.CERT_MOUNT}:ro"])


def test_pip_build_args_name_a_missing_source():
    with pytest.raises(FileNotFoundError, match="/nonexistent/wheels"):
        image_build.pip_build_args({"find-links": "/nonexistent/wheels"})


def test_every_pip_build_arg_is_declared_where_pip_runs():
    args, _ = image_build.pip_build_args({})
    runtime = parse_dockerfile(DOCKERFILE_TEXT).stage("cpu-runtime")
    declared = {i.args.split("=")[0] for i in runtime.all("ARG")}
    assert set(args) | {"PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT", "TORCH_VERSION"} <= declared


def test_the_build_command_is_offline_daemonless_and_pinned(tmp_path):
    command = image_build.build_command(
        dockerfile=tmp_path / "Dockerfile", serving=tmp_path / "serving", requirements=tmp_path,
        model=tmp_path / "model", tag="t", pip_args={"PIP_FIND_LINKS": "/w"}, volumes=["/w:/w:ro"],
        torch_version="2.13.0")
    line = " ".join(command)
    for expected in ("--storage-driver vfs", "bud --isolation chroot", "--pull=never", "--layers",
                     f"--timestamp {image_build.TIMESTAMP}", "--target cpu", f"--build-context model={tmp_path}/model",
                     f"--build-context requirements={tmp_path}", "--build-arg MODEL_SOURCE=local",
                     "--build-arg TORCH_VERSION=2.13.0+cpu", "--build-arg PIP_FIND_LINKS=/w", "--volume /w:/w:ro",
                     "--format docker"):
        assert expected in line
    assert command[-1] == str(tmp_path / "serving")
    assert f"--root {image_build.STORAGE_DIR}" in line


def test_the_layer_table_lists_every_layer():
    report = {"image": "i", "build_s": 1.0, "size_bytes": 3_000_000, "layers": [
        {"created_by": "/bin/sh -c #(nop) COPY dir:abc in /opt/model", "diff_id": "sha256:" + "a" * 64,
         "size": 1_000_000},
        {"created_by": "RUN a | b", "diff_id": "sha256:" + "b" * 64, "size": 2_000_000}]}
    table = image_build.layer_table(report)
    assert "2 layers, 3.0 MB" in table
    assert "| 1 | 1.0 | `aaaaaaaaaaaa` |" in table and "RUN a \\| b" in table


def test_the_stand_in_recipe_key_follows_the_recipe():
    assert image_base.ROOTFS.name == f"rootfs-{image_base.SUITE}-{image_base.RECIPE_KEY}"
    assert Path(image_base.ROOTFS).parent == image_build.CACHE_DIR
