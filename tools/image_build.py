"""Build the serving image's ``cpu`` target offline with buildah (``make image``).

No Docker engine and no registry are reachable here, so the build runs Debian's buildah 1.28 daemonless
(``--isolation chroot --storage-driver vfs``, storage under ``.cache/image/containers``) with ``--pull=never``:

- the base image the Dockerfile names is replaced by a stand-in made with debootstrap (``tools.image_base``),
  tagged with exactly the reference the Dockerfile's ``PYTHON_IMAGE`` default names;
- the weights come from the tiny model on disk through the Dockerfile's ``MODEL_SOURCE=local`` stage;
- pip inside the build resolves exactly as this machine's pip does (its configured index, extra indexes and
  find-links, passed as build arguments; local directories are mounted read-only at the same paths);
- the Dockerfile is used as it is, except that buildah 1.28 cannot parse ``COPY --link``: a generated copy
  writes it as ``COPY`` (``buildah_dockerfile``; tests/tools/test_image_build.py keeps that the only change).

Without ``--link`` a copied layer's tar would carry the build's wall-clock times; ``--timestamp`` pins every file
time (as SOURCE_DATE_EPOCH does for BuildKit), so an unchanged copy is byte-identical over a changed parent.

CLI: ``python -m tools.image_build [--tag T] [--serving DIR] [--requirements DIR] [--report FILE]``.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from tools import image_base

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "serving" / "Dockerfile"
CACHE_DIR = REPO_ROOT / ".cache" / "image"
STORAGE_DIR = CACHE_DIR / "containers"
GENERATED_DOCKERFILE = CACHE_DIR / "Dockerfile.buildah"
TINY_MODEL = REPO_ROOT / ".cache" / "tiny-model"
IMAGE = "localhost/edge-diffusion-cpu:dev"
TARGET = "cpu"
# Any fixed value works; 0 is the usual reproducible-build epoch.
TIMESTAMP = 0
PUBLIC_INDEX = "https://pypi.org/simple"
CERT_MOUNT = "/run/pip-ca-bundle.crt"

_COPY_LINK = re.compile(r"^(\s*COPY\s+)--link\s+", re.IGNORECASE)


def buildah_dockerfile(text: str) -> str:
    """The Dockerfile with ``COPY --link`` written as ``COPY``: buildah 1.28 does not parse the flag."""
    return "".join(_COPY_LINK.sub(r"\1", line) for line in text.splitlines(keepends=True))


def global_arg(text: str, name: str) -> str:
    """The default of a global ``ARG`` (one that precedes the first FROM)."""
    for line in text.splitlines():
        if re.match(r"\s*FROM\s", line, re.IGNORECASE):
            break
        match = re.match(rf"\s*ARG\s+{re.escape(name)}=(\S+)\s*$", line)
        if match:
            return match.group(1)
    raise ValueError(f"serving/Dockerfile has no global ARG {name}=<default>")


def buildah(*args: str) -> list[str]:
    """A buildah command line on the project's own vfs store (no daemon, no shared state)."""
    return ["buildah", "--root", str(STORAGE_DIR), "--runroot", str(CACHE_DIR / "run"),
            "--storage-driver", "vfs", *args]


def host_pip_config(run=subprocess.run) -> dict[str, str]:
    """This machine's pip settings (files and PIP_* environment), as ``pip config list`` reports them."""
    listing = run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
    settings: dict[str, str] = {}
    for line in listing.stdout.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        # The environment overrides the files, as in pip; per-command sections do not apply to `install`.
        if scope not in ("global", "install", ":env:"):
            continue
        if name not in settings or scope == ":env:":
            settings[name] = value.strip("'\"")
    return settings


def pip_build_args(settings: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Build arguments that make pip in the build resolve as this machine's pip does, and the read-only
    volumes that carry its local sources (file: indexes and find-links directories, at the same paths)."""
    index = settings.get("index-url", PUBLIC_INDEX)
    args = {"PIP_INDEX_URL": index, "TORCH_CPU_INDEX": index}
    locations = [index]
    for name, arg in (("extra-index-url", "PIP_EXTRA_INDEX_URL"), ("find-links", "PIP_FIND_LINKS")):
        if settings.get(name):
            args[arg] = settings[name]
            locations += settings[name].split()
    volumes: list[str] = []
    if settings.get("cert"):
        # This machine reaches the index through a TLS proxy that only its own CA bundle trusts; the bundle is
        # mounted for the RUN steps only, at a path of its own, so no layer carries it.
        args["PIP_CERT"] = CERT_MOUNT
        volumes.append(f"{settings['cert']}:{CERT_MOUNT}:ro")
    for location in locations:
        parsed = urlparse(location)
        if parsed.scheme in ("http", "https"):
            continue
        path = Path(parsed.path if parsed.scheme == "file" else location)
        # A file: index links its files relatively (../../files/x.whl): mount the directory above "simple".
        root = path.parent if path.name == "simple" else path
        if not root.is_dir():
            raise FileNotFoundError(f"pip source {location} (from pip config) is not a directory here")
        volume = f"{root}:{root}:ro"
        if volume not in volumes:
            volumes.append(volume)
    return args, volumes


def build_command(*, dockerfile: Path, serving: Path, requirements: Path, model: Path, tag: str,
                  pip_args: dict[str, str], volumes: list[str], torch_version: str) -> list[str]:
    command = buildah(
        "bud", "--isolation", "chroot", "--pull=never", "--layers", "--format", "docker", "--timestamp", str(TIMESTAMP),
        "--file", str(dockerfile), "--target", TARGET, "--tag", tag,
        "--build-context", f"requirements={requirements}", "--build-context", f"model={model}",
        "--build-arg", "MODEL_SOURCE=local",
        # The machine's CPU build of the pinned torch; an unlabelled pin could resolve to a CUDA build.
        "--build-arg", f"TORCH_VERSION={torch_version}+cpu",
    )
    for name, value in pip_args.items():
        command += ["--build-arg", f"{name}={value}"]
    for volume in volumes:
        command += ["--volume", volume]
    return [*command, str(serving)]


def image_layers(ref: str, run=subprocess.run) -> list[dict]:
    """The image's layers, bottom up: the instruction that made each, its diff ID and its size in bytes."""
    inspected = json.loads(run(buildah("inspect", "--type", "image", ref), capture_output=True, text=True,
                               check=True).stdout)
    diff_ids = inspected["OCIv1"]["rootfs"]["diff_ids"]
    history = [h for h in inspected["OCIv1"].get("history", []) if not h.get("empty_layer")]
    manifest = json.loads(inspected["Manifest"])
    sizes = [layer["size"] for layer in manifest["layers"]]
    if not len(diff_ids) == len(history) == len(sizes):
        raise RuntimeError(f"{ref}: {len(diff_ids)} layers, {len(history)} history entries, {len(sizes)} sizes")
    return [{"created_by": h.get("created_by", ""), "diff_id": d, "size": s}
            for h, d, s in zip(history, diff_ids, sizes)]


def build(*, serving: Path, requirements: Path, model: Path, tag: str) -> dict:
    text = DOCKERFILE.read_text()
    base = image_base.ensure(global_arg(text, "PYTHON_IMAGE"), buildah)
    GENERATED_DOCKERFILE.parent.mkdir(parents=True, exist_ok=True)
    GENERATED_DOCKERFILE.write_text(buildah_dockerfile(text))
    if not (model / "model_index.json").is_file():
        raise FileNotFoundError(f"{model} holds no diffusers pipeline; run `make {TINY_MODEL.relative_to(REPO_ROOT)}"
                                "/model_index.json` first")
    pip_args, volumes = pip_build_args(host_pip_config())
    command = build_command(dockerfile=GENERATED_DOCKERFILE, serving=serving, requirements=requirements,
                            model=model, tag=tag, pip_args=pip_args, volumes=volumes,
                            torch_version=global_arg(text, "TORCH_VERSION"))
    print("+", shlex.join(command), flush=True)
    started = time.monotonic()
    subprocess.run(["nice", *command], check=True)
    seconds = round(time.monotonic() - started, 1)
    layers = image_layers(tag)
    report = {"image": tag, "base": base, "build_s": seconds, "layers": layers,
              "size_bytes": sum(layer["size"] for layer in layers)}
    print(layer_table(report))
    return report


def layer_table(report: dict) -> str:
    rows = [f"{report['image']}: {len(report['layers'])} layers, {report['size_bytes'] / 1e6:.1f} MB "
            f"(uncompressed), built in {report['build_s']} s", "| # | size (MB) | diff ID | made by |",
            "|---|---|---|---|"]
    for number, layer in enumerate(report["layers"], start=1):
        made_by = re.sub(r"\s+", " ", layer["created_by"]).replace("|", "\\|")[:110]
        rows.append(f"| {number} | {layer['size'] / 1e6:.1f} | `{layer['diff_id'][7:19]}` | `{made_by}` |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=IMAGE)
    parser.add_argument("--serving", type=Path, default=REPO_ROOT / "serving", help="the main build context")
    parser.add_argument("--requirements", type=Path, default=REPO_ROOT, help="the 'requirements' context")
    parser.add_argument("--model", type=Path, default=TINY_MODEL, help="the 'model' context (weights on disk)")
    parser.add_argument("--report", type=Path, default=CACHE_DIR / "build.json")
    args = parser.parse_args(argv)
    report = build(serving=args.serving, requirements=args.requirements, model=args.model, tag=args.tag)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
