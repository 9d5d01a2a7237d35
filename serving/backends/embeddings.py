"""Prompt embeddings, cached: the text encoder runs once per distinct text, not once per request.

Each text is one entry, keyed by (model, text): a prompt's embedding and a negative prompt's are the same function
of the text in diffusers' encode_prompt (both are padded to the tokenizer's max length; clip skip, which only the
positive side honours, is never set here), so the empty negative prompt of every guided request is computed once
and reused until it falls out of the LRU. Entries are read-only: the pipeline copies them when it batches.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

# ~77 x 1024 values each (SD 2.x): 128 entries are ~20 MB in float16.
MAX_ENTRIES = 128


class PromptEmbeddings:
    """A bounded, thread-safe LRU of per-text embeddings for one pipeline's text encoder."""

    def __init__(self, model: str, max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries: must be >= 1, got {max_entries}")
        self.model = model
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, pipe: Any, text: str) -> Any:
        """The (1, tokens, dim) embedding of ``text`` on the pipeline's device."""
        key = (self.model, text)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        # Outside the lock: concurrent slots encode different texts in parallel; a race encodes one text twice.
        embeds = encode(pipe, text)
        with self._lock:
            self._entries[key] = embeds
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return embeds

    def pipeline_kwargs(self, pipe: Any, prompt: str, negative_prompt: str | None, guidance: bool) -> dict[str, Any]:
        """prompt_embeds (and negative_prompt_embeds with guidance) for a diffusers pipeline call."""
        kwargs = {"prompt_embeds": self.get(pipe, prompt)}
        if guidance:
            kwargs["negative_prompt_embeds"] = self.get(pipe, negative_prompt or "")
        return kwargs


def encode(pipe: Any, text: str) -> Any:
    import torch

    device = getattr(pipe, "_execution_device", None) or pipe.device
    with torch.inference_mode():
        embeds, _ = pipe.encode_prompt(text, device, 1, False)
    return embeds
