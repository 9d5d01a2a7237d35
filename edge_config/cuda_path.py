"""The nvidia pods' GPU fast path: torch.compile for a fixed shape set, and where the compile artifacts are cached."""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from edge_config.errors import FieldProblem, Hint
from edge_config.fields import Section, unique

# torch.compile modes the server accepts (serving.core.settings.COMPILE_MODES; tests/test_edge_config.py keeps them equal).
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
# The two modes in which inductor captures CUDA graphs itself.
GRAPH_COMPILE_MODES = frozenset({"reduce-overhead", "max-autotune"})
# The server's request size bounds (its --min-image-size / --max-image-size defaults, which the chart leaves as they
# are); a warm-up size outside them would stop the server at start.
MIN_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 1024
_SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
MAX_WARMUP_SIZES = 8
S3_PREFIX_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._-]*/)+$"


class CompileCacheConfig(Section):
    """Where the server keeps the compile artifacts it saves after warm-up and loads at the next start.

    Always a directory on the pod's /tmp emptyDir (the root filesystem is read-only and restricted Pod Security
    forbids hostPath), which lives as long as the pod. Only the S3 prefix is shared between pods, so with ``s3`` off
    every new pod compiles again.
    """

    # On by default: the S3 prefix is the only cache location a restricted pod shares with later pods, and without
    # it every scale-out pays the whole compile. It is expected to hold a few hundred MB per GPU type and release.
    s3: StrictBool = Field(True, description="Create an S3 bucket in EdgeClusterStack and let the nvidia pods read "
                                             "and write the artifacts under `s3_prefix` through their Pod Identity "
                                             "role, so only the first pod per GPU type, release and shape set "
                                             "compiles.")
    s3_prefix: Annotated[str, Hint("give a relative key prefix ending in '/', e.g. \"compile-cache/\" (letters, "
                                   "digits, '.', '_', '-' per segment)")] = Field(
        "compile-cache/", pattern=S3_PREFIX_PATTERN, max_length=200,
        description="Key prefix in the cache bucket; the pods' role may read and write only below it.")
    expiration_days: int = Field(30, ge=1, le=365, description="Days after which S3 deletes a cached object (a pod "
                                                               "that then misses compiles and uploads it again).")


class CudaPathConfig(Section):
    """The nvidia pods' GPU fast path. The server serves fast exactly the warmed shapes: each of `warmup_sizes`, with
    guidance on and off, for 1..`max_images` images; any other request shape runs eagerly."""

    # On by default: the compile cache makes its cost a once-per-GPU-type event (docs/workloads.md).
    compile: StrictBool = Field(True, description="torch.compile the UNet and VAE decoder for the warmed shapes "
                                                  "(the server's --compile).")
    compile_mode: Annotated[CompileMode | None, Hint(noun="compile mode")] = Field(
        None, description="The server's --compile-mode; null: `max-autotune` with `cuda_graphs`, else "
                          "`max-autotune-no-cudagraphs` (the server's default). `reduce-overhead` and `max-autotune` "
                          "capture CUDA graphs and need `workloads.max_concurrency` 1.")
    cuda_graphs: StrictBool = Field(False, description="Capture CUDA graphs (the server's --cuda-graphs); needs "
                                                       "`workloads.max_concurrency` 1.")
    warmup_sizes: tuple[str, ...] = Field(("512x512",), min_length=1,
                                          description="`WIDTHxHEIGHT` sizes warmed (and compiled) before a pod turns "
                                                      "ready; sides multiples of 8 within 64..1024.")
    max_images: int = Field(4, ge=1, le=8, description="Largest number of images per request (the server's "
                                                       "--max-images); each count is warmed, with and without "
                                                       "guidance.")
    compile_budget_per_shape_s: int = Field(
        240, ge=10, le=1800, description="Seconds the nvidia startup probe allows, on top of "
                                         "`model_load_timeout_s`, per warmed shape for a first pod to compile "
                                         "(only with `compile`).")
    compile_scratch_gib: int = Field(8, ge=0, le=256, description="GiB added to the nvidia pods' /tmp emptyDir and "
                                                                  "ephemeral-storage request for compiler caches "
                                                                  "and the saved artifacts (only with `compile`).")
    compile_cache: CompileCacheConfig = Field(default_factory=CompileCacheConfig,
                                              description="Where compile artifacts are cached (only with `compile`).")

    @field_validator("warmup_sizes")
    @classmethod
    def _sizes(cls, sizes: tuple[str, ...]) -> tuple[str, ...]:
        unique(sizes)
        if len(sizes) > MAX_WARMUP_SIZES:
            raise FieldProblem(f"{len(sizes)} sizes, each compiled for every image count with and without guidance",
                               f"list at most {MAX_WARMUP_SIZES} sizes; others are served eagerly")
        for i, size in enumerate(sizes):
            match = _SIZE_RE.match(size)
            if not match:
                raise FieldProblem(f"{size!r} is not WIDTHxHEIGHT", "write sizes like \"512x512\"", (i,))
            for side in map(int, match.groups()):
                if side % 8 or not MIN_IMAGE_SIZE <= side <= MAX_IMAGE_SIZE:
                    raise FieldProblem(f"{size}: {side} is not a multiple of 8 within {MIN_IMAGE_SIZE}.."
                                       f"{MAX_IMAGE_SIZE}", "use sides the server accepts, e.g. \"512x512\" or "
                                       "\"768x512\"", (i,))
        return sizes

    @model_validator(mode="after")
    def _consistent(self) -> "CudaPathConfig":
        if self.compile_mode is not None:
            if not self.compile:
                raise FieldProblem(f"{self.compile_mode!r} only applies with compile on",
                                   "set compile to true, or compile_mode to null", ("compile_mode",))
            if self.cuda_graphs and self.compile_mode not in GRAPH_COMPILE_MODES:
                raise FieldProblem(f"{self.compile_mode!r} captures no CUDA graphs, but cuda_graphs is on",
                                   "use \"reduce-overhead\" or \"max-autotune\" (or null), or set cuda_graphs to "
                                   "false", ("compile_mode",))
        return self

    @property
    def effective_compile_mode(self) -> str | None:
        """The mode the server compiles with (its own default when compile_mode is null), None without compile."""
        if not self.compile:
            return None
        if self.compile_mode is not None:
            return self.compile_mode
        return "max-autotune" if self.cuda_graphs else "max-autotune-no-cudagraphs"

    @property
    def captures_graphs(self) -> bool:
        """Whether the server replays captured CUDA graphs, which it allows only with --max-concurrency 1."""
        return self.cuda_graphs or self.effective_compile_mode in GRAPH_COMPILE_MODES

    @property
    def warmed_shapes(self) -> int:
        """Request shapes warmed before ready: sizes x guidance on/off x 1..max_images images."""
        return len(self.warmup_sizes) * 2 * self.max_images

    @property
    def compile_budget_s(self) -> int:
        """Startup time beyond the model load a first pod may spend compiling (0 without compile)."""
        return self.warmed_shapes * self.compile_budget_per_shape_s if self.compile else 0

    @property
    def s3_cache(self) -> bool:
        """Whether the pods use the S3 compile cache (compile on and its S3 location on)."""
        return self.compile and self.compile_cache.s3
