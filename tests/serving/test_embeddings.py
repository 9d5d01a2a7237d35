"""Prompt embeddings: one text-encoder pass per distinct text, bounded, and the images exactly as before."""
from __future__ import annotations

import threading

import pytest
import torch

from serving.backends.base import GenerationParams
from serving.backends.embeddings import PromptEmbeddings


class CountingPipe:
    """encode_prompt's contract: (prompt_embeds, negative) for one text; counts the calls."""

    device = torch.device("cpu")

    def __init__(self):
        self.encoded = []

    def encode_prompt(self, text, device, n, cfg):
        self.encoded.append(text)
        return torch.full((1, 77, 4), float(len(text))), None


def test_lru_hits_evicts_and_keys_by_model():
    pipe = CountingPipe()
    cache = PromptEmbeddings("model-a", max_entries=2)
    first = cache.get(pipe, "a cat")
    assert cache.get(pipe, "a cat") is first and pipe.encoded == ["a cat"]
    cache.get(pipe, "a dog")
    cache.get(pipe, "a cat")  # refreshes "a cat": "a dog" is now the oldest
    cache.get(pipe, "a fox")
    assert len(cache) == 2 and (cache.hits, cache.misses) == (2, 3)
    cache.get(pipe, "a dog")
    assert pipe.encoded == ["a cat", "a dog", "a fox", "a dog"]
    other = PromptEmbeddings("model-b")
    other.get(pipe, "a cat")
    assert pipe.encoded[-1] == "a cat"  # another model never shares an entry
    with pytest.raises(ValueError, match="max_entries"):
        PromptEmbeddings("m", max_entries=0)


def test_the_empty_negative_prompt_is_encoded_once():
    pipe = CountingPipe()
    cache = PromptEmbeddings("m")
    for prompt in ("one", "two", "three"):
        kwargs = cache.pipeline_kwargs(pipe, prompt, None, guidance=True)
        assert set(kwargs) == {"prompt_embeds", "negative_prompt_embeds"}
    assert pipe.encoded == ["one", "", "two", "three"]
    assert set(cache.pipeline_kwargs(pipe, "one", None, guidance=False)) == {"prompt_embeds"}


def test_backend_images_match_the_uncached_pipeline_and_skip_the_encoder(cpu_backend):
    pipe = cpu_backend.pipe
    params = GenerationParams(prompt="a red cube", width=64, height=64, steps=2, guidance_scale=5.0, seed=7,
                              negative_prompt="blurry")
    calls = []
    hook = pipe.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        cached = cpu_backend.generate(params, threading.Event())[0]
        encoded_first = len(calls)
        again = cpu_backend.generate(params, threading.Event())[0]
        assert len(calls) == encoded_first  # the second request ran no text encoder at all
        with torch.inference_mode():
            reference = pipe(prompt="a red cube", negative_prompt="blurry", width=64, height=64,
                             num_inference_steps=2, guidance_scale=5.0,
                             generator=torch.Generator("cpu").manual_seed(7), output_type="pil").images[0]
    finally:
        hook.remove()
    assert cached.tobytes() == reference.tobytes() == again.tobytes()
