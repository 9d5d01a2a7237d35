"""Prompt checks shared by every route that takes one (REST, OpenAI forms, stream configs)."""
from __future__ import annotations

import unicodedata

# Unicode categories that draw nothing: control (NUL, BEL, ...), format (zero-width space/joiners, BOM, soft
# hyphen, direction marks) and separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def require_visible_text(value: str) -> str:
    """A prompt must keep some text once control, zero-width and space characters are removed."""
    if not any(unicodedata.category(ch) not in _INVISIBLE and not ch.isspace() for ch in value):
        raise ValueError("must contain visible text (whitespace, control and zero-width characters do not count)")
    return value
