"""What the config chooses from: accelerators, their EC2 instance families, image flavors and architectures."""
from __future__ import annotations

from typing import Literal

ACCELERATORS = ("nvidia", "neuron")
# Instance families each accelerator can schedule on; a Local Zone may list any of them.
ACCELERATOR_FAMILIES: dict[str, tuple[str, ...]] = {
    "nvidia": ("g4dn", "g5", "g5g", "g6", "g6e", "gr6"),
    "neuron": ("inf2",),
}
FAMILY_ACCELERATOR = {fam: acc for acc, fams in ACCELERATOR_FAMILIES.items() for fam in fams}
ARM64_FAMILIES = frozenset({"g5g"})
IMAGE_FLAVORS = ("cuda", "neuron", "cpu")
ARCHITECTURES = ("amd64", "arm64")

Accelerator = Literal[ACCELERATORS]  # type: ignore[valid-type]
InstanceFamily = Literal[tuple(sorted(FAMILY_ACCELERATOR))]  # type: ignore[valid-type]
ImageFlavor = Literal[IMAGE_FLAVORS]  # type: ignore[valid-type]
Architecture = Literal[ARCHITECTURES]  # type: ignore[valid-type]
