"""The wheels benchmarks/device_check.sh carries to a GPU machine that has no network (`make gpu-wheels`).

That machine brings Python 3.12 with the CUDA build of torch, triton and a large scientific set
(`GPU_MACHINE_PACKAGES`), but not the server's web stack or diffusers. What travels is computed, not listed:

- every pin of requirements-serving.txt, except the builds the machine must provide itself (`MACHINE_BUILDS`:
  torch and the compiled array/image libraries its packages are built against), what only a cluster uses
  (`CLUSTER_ONLY`) or only a WebRTC session (`WEBRTC_ONLY`, loaded lazily; no phase opens one), and except a pin
  the machine already has at exactly that version;
- then, recursively, each requirement of a carried package that the machine does not satisfy (missing there, or
  at a known version outside the specifier), at the version this repository's venv resolved the pins to.

Everything is downloaded with `pip download --no-deps` for CPython 3.12 on manylinux x86_64 into one directory
(stale wheels removed), and the whole trip (tracked files + wheels) must stay under the device tool's 64 MiB.
"""
from __future__ import annotations

import argparse
import ast
import importlib.metadata as metadata
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO_ROOT / "requirements-serving.txt"
WHEEL_DIR = REPO_ROOT / ".whl"
TRIP_LIMIT_MIB = 64.0

# The GPU machine's preinstalled distributions (its image's package list, read 2026-11-17) and the versions of
# those its `pip list` showed (2026-11). A package absent here is carried; one present at an unknown version is
# trusted, and device_check.sh prints what was actually imported.
GPU_MACHINE_PACKAGES = frozenset(canonicalize_name(n) for n in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split())
GPU_MACHINE_VERSIONS = {canonicalize_name(k): v for k, v in {
    "accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
    "tokenizers": "0.23.2", "torch": "2.11.0", "transformers": "5.17.0", "triton": "3.6.0",
}.items()}
# Built against the machine's own CUDA/C libraries, or against each other there: never replaced.
MACHINE_BUILDS = frozenset({"torch", "numpy", "pillow"})
# boto3 reads the API key from Secrets Manager and the compile cache from S3; the standalone run uses neither.
CLUSTER_ONLY = frozenset({"boto3"})
# The WebRTC stream's stack (requirements-serving.txt's WebRTC block): the server imports it only when a WebRTC
# session starts (serving/stream/webrtc.py imports inside the route; the Neuron image runs without it), and no phase
# of the device check opens one. PyAV alone is tens of MiB, more than the trip's room.
WEBRTC_ONLY = frozenset(canonicalize_name(n) for n in (
    "aiortc", "aioice", "av", "pylibsrtp", "pyopenssl", "pyee", "google-crc32c", "dnspython", "ifaddr"))
TARGET_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;#]+)\s*$")


def target_environment() -> dict[str, str]:
    env = dict(default_environment())
    env.update({"python_version": TARGET_PYTHON, "python_full_version": f"{TARGET_PYTHON}.3", "sys_platform": "linux",
                "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""})
    return env


def serving_pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if not match:
            raise ValueError(f"{path.name}: {line!r} is not a NAME==VERSION pin")
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def machine_satisfies(requirement: Requirement) -> bool:
    name = canonicalize_name(requirement.name)
    if name not in GPU_MACHINE_PACKAGES:
        return False
    known = GPU_MACHINE_VERSIONS.get(name)
    return known is None or requirement.specifier.contains(known, prereleases=True)


@dataclass(frozen=True)
class Carried:
    name: str
    version: str
    why: str


def carried_set(pins: dict[str, str] | None = None) -> list[Carried]:
    """The packages to carry, with the reason for each (sorted by name)."""
    pins = serving_pins() if pins is None else pins
    env = target_environment()
    chosen: dict[str, Carried] = {}
    todo: list[str] = []
    for name, version in pins.items():
        if name in MACHINE_BUILDS or name in CLUSTER_ONLY or name in WEBRTC_ONLY:
            continue
        if GPU_MACHINE_VERSIONS.get(name) == version:
            continue
        known = GPU_MACHINE_VERSIONS.get(name)
        why = "pinned; missing there" if name not in GPU_MACHINE_PACKAGES else (
            f"pinned; there {known}" if known else "pinned; version there unknown")
        chosen[name] = Carried(name, version, why)
        todo.append(name)
    while todo:
        parent = todo.pop()
        for text in metadata.requires(parent) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(env):
                continue
            name = canonicalize_name(requirement.name)
            if name in chosen or name in MACHINE_BUILDS or machine_satisfies(requirement):
                continue
            version = metadata.version(name)
            if not requirement.specifier.contains(version, prereleases=True):
                raise RuntimeError(f"{parent} needs {requirement}, but this venv has {name} {version}; "
                                   "run `make setup`")
            chosen[name] = Carried(name, version, f"needed by {parent}")
            todo.append(name)
    return sorted(chosen.values(), key=lambda c: c.name)


# What the device check imports before any phase (benchmarks.gpu_common's main does the same).
PHASE_MODULES = ("serving.runtime.server", "benchmarks.gpu", "benchmarks.gpu_e2e", "benchmarks.gpu_stream",
                 "benchmarks.gpu_report")
# The code that runs on that machine: the server and the device check's phases (and what they import of ours).
DEVICE_SOURCES = ("serving", "loadtest", "benchmarks/gpu.py", "benchmarks/gpu_common.py", "benchmarks/gpu_e2e.py",
                  "benchmarks/gpu_stream.py", "benchmarks/gpu_report.py", "benchmarks/podenv.py", "benchmarks/sd21.py",
                  "benchmarks/serverproc.py", "benchmarks/stream.py")
LOCAL_PACKAGES = frozenset({"serving", "benchmarks", "loadtest", "tools"})
# Loaded only with --device neuron, in the Neuron image (constraints-neuron.txt), never on the GPU machine.
NEURON_ONLY = ("serving/backends/neuron.py",)


def source_imports(root: Path = REPO_ROOT, sources: tuple[str, ...] = DEVICE_SOURCES) -> dict[str, str]:
    """Top-level module -> the first file importing it, over every import statement (the lazy ones in functions
    too) of the code that runs on the device."""
    found: dict[str, str] = {}
    for source in sources:
        path = root / source
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if str(file.relative_to(root)) in NEURON_ONLY:
                continue
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                for name in names:
                    found.setdefault(name.split(".")[0], str(file.relative_to(root)))
    return found


def uncovered(imports: dict[str, str], carried: list[Carried]) -> list[str]:
    """Imports that neither the standard library, this repository, the carried set nor the machine provides (nor
    only a cluster or a WebRTC session uses): each would fail on the device. As "module (file)"."""
    have = {c.name for c in carried} | GPU_MACHINE_PACKAGES | MACHINE_BUILDS | CLUSTER_ONLY | WEBRTC_ONLY
    owners = metadata.packages_distributions()
    missing = []
    for module, where in sorted(imports.items()):
        if module in sys.stdlib_module_names or module in LOCAL_PACKAGES or module == "__future__":
            continue
        # Not installed here (triton, a CUDA-only build): the module's own name stands for its distribution.
        dists = {canonicalize_name(d) for d in owners.get(module, [module])}
        if not dists & have:
            missing.append(f"{module} ({where})")
    return missing


def download_command(carried: list[Carried], out: Path) -> list[str]:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", TARGET_PYTHON, "--implementation", "cp", "--dest", str(out)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return command + [f"{c.name}=={c.version}" for c in carried]


def wheel_name(filename: str) -> str:
    return canonicalize_name(filename.split("-", 1)[0])


def prune(out: Path, carried: list[Carried]) -> list[Path]:
    """Remove wheels that are not (or no longer) in the set, so exactly one version of each stays."""
    wanted = {(c.name, Version(c.version)) for c in carried}
    removed = []
    for wheel in sorted(out.glob("*.whl")):
        parts = wheel.name.split("-")
        if (wheel_name(wheel.name), Version(parts[1])) not in wanted:
            wheel.unlink()
            removed.append(wheel)
    return removed


def tracked_bytes(root: Path = REPO_ROOT) -> int:
    """Bytes of what the device tool sends besides carried paths: tracked and untracked-not-ignored files."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout.decode()
    total = 0
    for name in filter(None, listing.split("\0")):
        path = root / name
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def trip_mib(wheel_dir: Path, tree_bytes: int) -> tuple[float, float]:
    """(MiB of the carried directory, MiB of the whole trip)."""
    carried = sum(p.stat().st_size for p in wheel_dir.rglob("*") if p.is_file())
    return carried / 2**20, (carried + tree_bytes) / 2**20


def check_budget(wheel_dir: Path, tree_bytes: int, limit_mib: float = TRIP_LIMIT_MIB) -> str:
    carried, total = trip_mib(wheel_dir, tree_bytes)
    line = f"{wheel_dir.name}: {carried:.1f} MiB; with the working tree {total:.1f} MiB of {limit_mib:.0f} MiB"
    if total > limit_mib:
        raise SystemExit(f"{line}: over the device tool's limit; carry fewer packages")
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wheels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=WHEEL_DIR)
    parser.add_argument("--list", action="store_true", help="print the set and why, download nothing")
    args = parser.parse_args(argv)
    carried = carried_set()
    for item in carried:
        print(f"{item.name + '==' + item.version:<32} {item.why}")
    if args.list:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    subprocess.run(download_command(carried, args.out), check=True)
    for wheel in prune(args.out, carried):
        print(f"removed stale {wheel.name}")
    missing = {c.name for c in carried} - {wheel_name(p.name) for p in args.out.glob("*.whl")}
    if missing:
        raise SystemExit(f"no wheel downloaded for {', '.join(sorted(missing))}")
    print(check_budget(args.out, tracked_bytes()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
