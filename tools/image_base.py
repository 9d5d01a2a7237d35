"""A stand-in for the official python base image, made from Debian packages (no registry is reachable here).

``ensure(reference, buildah)`` makes the image once and tags it with exactly the reference the Dockerfile's
``PYTHON_IMAGE`` default names, so ``buildah bud --pull=never`` resolves ``FROM ${PYTHON_IMAGE}`` to it.

How it is made: ``debootstrap --variant=minbase`` of Debian bookworm (the suite the official
``*-slim-bookworm`` image is built on, and the only one in this machine's apt sources with python3.11) with
python3.11, its venv module, ca-certificates, netbase and tzdata. The root filesystem is cached under
``.cache/image/`` (keyed by this recipe). Then, to present the official image's layout and contract:

- ``python -m venv /usr/local``: ``/usr/local/bin/python``, ``pip`` and ``python3`` on PATH and
  ``/usr/local/lib/python3.11/site-packages`` for installs, as in the official image (no PEP 668 marker);
- every ``.pyc`` is deleted, as the official image's build does (``find /usr/local ... -name '*.pyc' -exec
  rm``), so the Dockerfile's own bytecode step is what the image test proves;
- ``PATH``, ``LANG=C.UTF-8``, ``PYTHON_VERSION`` and ``CMD ["python3"]`` as the official image sets them.

How it differs (docs/image-build.md lists it too): Debian's CPython 3.11.2 with Debian's patches, its
standard library in ``/usr/lib/python3.11`` (official: CPython 3.11.14 built from source into
``/usr/local``); pip 23.0.1 from Debian's ensurepip wheel (official: the pip bundled with 3.11.14, plus
setuptools and wheel); Debian's libssl/libsqlite/libffi builds; ``/usr/local/pyvenv.cfg`` exists.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache" / "image"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3.11", "python3.11-venv", "python3-distutils", "ca-certificates", "netbase", "tzdata")
PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
RECIPE = {"suite": SUITE, "packages": PACKAGES, "layout": "venv-at-usr-local, no pyc, empty /dev", "v": 1}
RECIPE_KEY = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]
ROOTFS = CACHE_DIR / f"rootfs-{SUITE}-{RECIPE_KEY}"


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, **kwargs)


def rootfs() -> Path:
    """The stand-in's root filesystem, made once per recipe."""
    done = ROOTFS.with_name(ROOTFS.name + ".complete")
    if done.exists() and ROOTFS.is_dir():
        return ROOTFS
    staging = ROOTFS.with_name(ROOTFS.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    # debootstrap does not resolve virtual packages: python3.11-venv needs python3-distutils named.
    _run(["nice", "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(staging),
          MIRROR], stdout=subprocess.DEVNULL)
    _run(["chroot", str(staging), "/usr/bin/python3.11", "-m", "venv", "/usr/local"])
    for activate in (staging / "usr/local/bin").glob("[Aa]ctivate*"):
        activate.unlink()
    for directory in ("usr/lib/python3.11", "usr/lib/python3", "usr/local"):
        for pyc in (staging / directory).rglob("*.pyc"):
            pyc.unlink()
    # Images carry an empty /dev and no package lists; the runtime provides devices.
    for path in [*(staging / "dev").iterdir(), *(staging / "var/lib/apt/lists").glob("*"),
                 *(staging / "var/cache/apt").glob("*.bin")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    shutil.rmtree(ROOTFS, ignore_errors=True)
    staging.rename(ROOTFS)
    done.write_text(json.dumps(RECIPE) + "\n")
    return ROOTFS


def python_version(root: Path) -> str:
    return _run(["chroot", str(root), "/usr/local/bin/python", "-c",
                 "import platform; print(platform.python_version())"],
                capture_output=True, text=True).stdout.strip()


def ensure(reference: str, buildah: Callable[..., list[str]]) -> str:
    """Tag the stand-in as ``reference`` unless an image of that name made from this recipe exists."""
    found = subprocess.run(buildah("inspect", "--type", "image", "--format",
                                   '{{index .ImageAnnotations "org.edge-diffusion.stand-in"}}', reference),
                           capture_output=True, text=True)
    if found.returncode == 0 and found.stdout.strip() == RECIPE_KEY:
        return reference
    root = rootfs()
    version = python_version(root)
    container = _run(buildah("from", "--pull=never", "scratch"), capture_output=True, text=True).stdout.strip()
    try:
        _run(buildah("copy", "--quiet", container, str(root), "/"), stdout=subprocess.DEVNULL)
        _run(buildah("config", "--env", f"PATH={PATH}", "--env", "LANG=C.UTF-8", "--env",
                     f"PYTHON_VERSION={version}", "--cmd", '["python3"]',
                     "--annotation", f"org.edge-diffusion.stand-in={RECIPE_KEY}",
                     "--created-by", f"debootstrap {SUITE} + tools/image_base.py (stand-in for {reference})",
                     container))
        _run(buildah("commit", "--quiet", "--timestamp", "0", "--rm", container, reference),
             stdout=subprocess.DEVNULL)
    except BaseException:
        subprocess.run(buildah("rm", container), capture_output=True)
        raise
    return reference
