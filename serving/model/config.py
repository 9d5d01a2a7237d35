"""Request defaults that come from the model, so few-step checkpoints (SD-Turbo) work by configuration alone.

Precedence: CLI flag / SERVING_* variable > ``serving.json`` next to ``model_index.json`` > the model's own
configs (native resolution from UNet sample size x VAE scale) > built-ins (25 steps, guidance 7.5).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.core.settings import Settings

HINTS_FILE = "serving.json"
BUILTIN_STEPS = 25
BUILTIN_GUIDANCE = 7.5
_HINT_KEYS = {
    "default_width": int,
    "default_height": int,
    "default_steps": int,
    "default_guidance_scale": (int, float),
    "scheduler": str,
    "neuron_data_parallel_mode": str,
}


class ModelConfigError(ValueError):
    """The model directory's configuration is missing or inconsistent."""


@dataclass(frozen=True)
class ModelDefaults:
    width: int
    height: int
    steps: int
    guidance_scale: float
    scheduler: str | None = None
    neuron_data_parallel_mode: str | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path}: invalid JSON ({exc}); fix or regenerate the file") from None
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: expected a JSON object")
    return data


def read_hints(model_dir: Path) -> dict[str, Any]:
    """Validated contents of serving.json (empty when the model has none)."""
    path = model_dir / HINTS_FILE
    if not path.is_file():
        return {}
    hints = _read_json(path)
    for key, value in hints.items():
        if key not in _HINT_KEYS:
            raise ModelConfigError(f"{path}: unknown key {key!r}; allowed keys: {', '.join(sorted(_HINT_KEYS))}")
        if isinstance(value, bool) or not isinstance(value, _HINT_KEYS[key]):
            raise ModelConfigError(f"{path}: {key} has the wrong type ({type(value).__name__})")
    return hints


def native_resolution(model_dir: Path) -> int | None:
    """Image side the UNet was trained at: sample_size x 2^(VAE down blocks - 1)."""
    unet_cfg, vae_cfg = model_dir / "unet" / "config.json", model_dir / "vae" / "config.json"
    if not (unet_cfg.is_file() and vae_cfg.is_file()):
        return None
    sample = _read_json(unet_cfg).get("sample_size")
    blocks = _read_json(vae_cfg).get("block_out_channels") or [0] * 4
    if not isinstance(sample, int):
        return None
    return sample * 2 ** (len(blocks) - 1)


def model_defaults(model_dir: str | Path, settings: Settings, fixed_shape: tuple[int, int] | None = None) -> ModelDefaults:
    model_dir = Path(model_dir)
    hints = read_hints(model_dir)
    native = native_resolution(model_dir) or 512
    width = settings.default_width or hints.get("default_width") or (fixed_shape[0] if fixed_shape else native)
    height = settings.default_height or hints.get("default_height") or (fixed_shape[1] if fixed_shape else native)
    steps = settings.default_steps or hints.get("default_steps") or BUILTIN_STEPS
    guidance = settings.default_guidance_scale
    if guidance is None:
        guidance = float(hints.get("default_guidance_scale", BUILTIN_GUIDANCE))
    defaults = ModelDefaults(
        width=int(width),
        height=int(height),
        steps=min(int(steps), settings.max_steps),
        guidance_scale=float(guidance),
        scheduler=settings.scheduler or hints.get("scheduler"),
        neuron_data_parallel_mode=hints.get("neuron_data_parallel_mode"),
    )
    for name, value in (("width", defaults.width), ("height", defaults.height)):
        if value % 8 or not settings.min_image_size <= value <= settings.max_image_size:
            raise ModelConfigError(
                f"default {name} {value} from {model_dir} is outside --min-image-size/--max-image-size "
                f"({settings.min_image_size}..{settings.max_image_size}) or not a multiple of 8; "
                f"set --default-{name} or widen the bounds"
            )
    return defaults
