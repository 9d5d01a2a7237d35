"""Compile artifacts saved after warm-up and loaded at the next start, so only the first pod per key compiles.

Two kinds, side by side under one key:
- torch's "mega-cache" (`torch.compiler.save_cache_artifacts`: inductor's FX-graph cache, the AOTAutograd cache
  and autotuning results, one blob). Loading it before warm-up turns every just-in-time compile of a matching
  graph into a cache hit; Dynamo still traces, inductor neither generates code nor autotunes.
- without CUDA graphs, every warmed call signature's ahead-of-time compiled function
  (serving.backends.cuda.precompiled): loaded whole, so a warm start runs no Dynamo trace at all.

Key: GPU model, torch, triton, the compile settings, the UNet's architecture and the warmed shape set. A pod only
loads artifacts written under its own key, so a new GPU type, release or shape set compiles afresh.

Layout, locally and under the S3 prefix alike:  <key>/artifacts.bin, <key>/key.json (what the key hashes),
<key>/precompiled.json (which function file serves which gate and signature) and <key>/precompiled-<hash>.bin.
Any error reading or writing a location is logged and skipped: the server then compiles, it never fails for it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("serving.compilecache")

ARTIFACTS = "artifacts.bin"
DESCRIPTION = "key.json"
MANIFEST = "precompiled.json"


def cache_key(fields: dict[str, Any]) -> str:
    """A directory name: a readable prefix (GPU, torch) and a hash of every field."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]
    readable = f"{fields.get('gpu', 'unknown')}-torch{fields.get('torch', '')}"
    return re.sub(r"[^A-Za-z0-9.+_-]+", "-", readable).strip("-").lower() + "-" + digest


def key_fields(gpu: str, mode: str, shapes: list, options: dict[str, Any], unet_config: dict[str, Any]) -> dict:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda,
        "mode": mode,
        "shapes": sorted(list(s) for s in shapes),
        "options": options,
        "unet": hashlib.sha256(json.dumps(unet_config, sort_keys=True, default=str).encode()).hexdigest()[:20],
    }


class CompileCache:
    """Where artifacts for one key live: a local directory and/or an S3 prefix (either may be None)."""

    def __init__(self, fields: dict[str, Any], directory: str | None = None, s3_url: str | None = None,
                 s3_client: Callable[[], Any] | None = None) -> None:
        self.fields = fields
        self.key = cache_key(fields)
        self.directory = Path(directory) if directory else None
        self.bucket, self.prefix = _split_s3(s3_url) if s3_url else (None, "")
        self._s3_client = s3_client or _default_s3_client
        self.loaded_from: str | None = None
        self._misses_at_load = 0
        # serving.backends.cuda.precompiled.Precompiled, when the backend compiles ahead of time.
        self.precompiled: Any = None

    @property
    def enabled(self) -> bool:
        return self.directory is not None or self.bucket is not None

    # -- load ----------------------------------------------------------------------------------------------
    def load(self) -> bool:
        """Load the artifacts (and the ahead-of-time functions) for this key from the first location that has
        them; True when anything was loaded."""
        functions = self._load_precompiled() if self.precompiled is not None else 0
        return self._load_artifacts() or functions > 0

    def _load_precompiled(self) -> int:
        for where, read in (("local", self._read_local), ("s3", self._read_s3)):
            try:
                manifest = read(MANIFEST)
            except Exception as exc:  # noqa: BLE001 - as for the artifacts: log, then compile instead
                log.warning("compile cache read failed", extra={"fields": {"where": where, "key": self.key,
                                                                         "error": repr(exc)[:300]}})
                continue
            if manifest is None:
                continue
            blobs: dict[str, bytes] = {}

            def read_kept(name: str, read=read) -> bytes | None:
                blobs[name] = read(name)
                return blobs[name]

            loaded = self.precompiled.load(manifest, read_kept)
            log.info("compile cache: ahead-of-time functions loaded", extra={"fields": {
                "where": where, "key": self.key, "functions": loaded,
                "seconds": [s for _, s in self.precompiled.load_seconds]}})
            if loaded and where == "s3" and self.directory is not None:
                self._write_local_files({**{k: v for k, v in blobs.items() if v is not None}, MANIFEST: manifest})
            if loaded:
                return loaded
        return 0

    def _load_artifacts(self) -> bool:
        for where, read in (("local", self._read_local), ("s3", self._read_s3)):
            try:
                blob = read()
            except Exception as exc:  # noqa: BLE001 - a cache is an optimisation: log and compile instead
                log.warning("compile cache read failed", extra={"fields": {"where": where, "key": self.key,
                                                                         "error": repr(exc)[:300]}})
                continue
            if blob is None:
                continue
            try:
                import torch

                if torch.compiler.load_cache_artifacts(blob) is None:  # torch logs a corrupt blob and returns None
                    raise ValueError("torch.compiler.load_cache_artifacts could not read the blob")
            except Exception as exc:  # noqa: BLE001 - a corrupt or foreign blob only costs a compile
                log.warning("compile cache artifacts rejected", extra={"fields": {"where": where, "key": self.key,
                                                                               "error": repr(exc)[:300]}})
                continue
            self.loaded_from = where
            self._misses_at_load = _fx_graph_misses()
            log.info("compile cache loaded", extra={"fields": {"where": where, "key": self.key, "bytes": len(blob)}})
            if where == "s3":
                self._write_local(blob)  # the next start on this node skips S3
            return True
        if self.enabled:
            log.info("compile cache miss", extra={"fields": {"key": self.key}})
        return False

    def _read_local(self, name: str = ARTIFACTS) -> bytes | None:
        if self.directory is None:
            return None
        path = self.directory / self.key / name
        return path.read_bytes() if path.is_file() else None

    def _read_s3(self, name: str = ARTIFACTS) -> bytes | None:
        if self.bucket is None:
            return None
        client = self._s3_client()
        try:
            response = client.get_object(Bucket=self.bucket, Key=self._s3_key(name))
        except client.exceptions.NoSuchKey:
            return None
        return response["Body"].read()

    # -- save ----------------------------------------------------------------------------------------------
    def save(self) -> bool:
        """Write what this process compiled to every configured location; True when anything was written.

        The ahead-of-time functions are written when this process compiled any; the mega-cache is skipped when the
        loaded artifacts covered every compile (no inductor cache miss since the load)."""
        if not self.enabled:
            return False
        wrote = False
        if self.precompiled is not None and self.precompiled.unsaved:
            wrote = self._write_files(self.precompiled.dump())
        if self.loaded_from is not None and _fx_graph_misses() == self._misses_at_load:
            log.info("compile cache: every graph came from the cache", extra={"fields": {"key": self.key}})
            return wrote
        import torch

        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            log.info("compile cache: nothing compiled to save", extra={"fields": {"key": self.key}})
            return wrote
        blob = saved[0]
        wrote = self._write_local(blob) or wrote
        if self.bucket is not None:
            try:
                client = self._s3_client()
                client.put_object(Bucket=self.bucket, Key=self._s3_key(ARTIFACTS), Body=blob)
                client.put_object(Bucket=self.bucket, Key=self._s3_key(DESCRIPTION), Body=self._description())
                wrote = True
                log.info("compile cache saved", extra={"fields": {"where": "s3", "key": self.key, "bytes": len(blob)}})
            except Exception as exc:  # noqa: BLE001 - the next pod compiles too; serving is unaffected
                log.warning("compile cache write failed", extra={"fields": {"where": "s3", "key": self.key,
                                                                          "error": repr(exc)[:300]}})
        return wrote

    def _write_local(self, blob: bytes) -> bool:
        if self.directory is None:
            return False
        target = self.directory / self.key
        try:
            target.mkdir(parents=True, exist_ok=True)
            (target / DESCRIPTION).write_bytes(self._description())
            # Write then rename: a pod starting meanwhile (shared node path) never reads half a file.
            fd, tmp = tempfile.mkstemp(dir=target, prefix=".artifacts-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(tmp, target / ARTIFACTS)
        except OSError as exc:  # a read-only image layer, a full disk: compile next time
            log.warning("compile cache write failed", extra={"fields": {"where": "local", "key": self.key,
                                                                      "error": repr(exc)[:300]}})
            return False
        log.info("compile cache saved", extra={"fields": {"where": "local", "key": self.key, "bytes": len(blob)}})
        return True

    def _write_files(self, files: dict[str, bytes]) -> bool:
        """Every file to every location, the manifest last: a reader never meets a manifest naming absent files."""
        if not files:
            return False
        wrote = self.directory is not None and self._write_local_files(files)
        if self.bucket is not None:
            try:
                client = self._s3_client()
                for name in sorted(files, key=lambda n: n == MANIFEST):
                    client.put_object(Bucket=self.bucket, Key=self._s3_key(name), Body=files[name])
                wrote = True
            except Exception as exc:  # noqa: BLE001 - the next pod compiles too; serving is unaffected
                log.warning("compile cache write failed", extra={"fields": {"where": "s3", "key": self.key,
                                                                          "error": repr(exc)[:300]}})
        return wrote

    def _write_local_files(self, files: dict[str, bytes]) -> bool:
        target = self.directory / self.key
        try:
            target.mkdir(parents=True, exist_ok=True)
            (target / DESCRIPTION).write_bytes(self._description())
            for name in sorted(files, key=lambda n: n == MANIFEST):
                fd, tmp = tempfile.mkstemp(dir=target, prefix=".part-")
                with os.fdopen(fd, "wb") as handle:
                    handle.write(files[name])
                os.replace(tmp, target / name)
        except OSError as exc:
            log.warning("compile cache write failed", extra={"fields": {"where": "local", "key": self.key,
                                                                      "error": repr(exc)[:300]}})
            return False
        log.info("compile cache: ahead-of-time functions saved", extra={"fields": {
            "where": "local", "key": self.key, "files": len(files), "bytes": sum(map(len, files.values()))}})
        return True

    def _description(self) -> bytes:
        return json.dumps({"key": self.key, **self.fields}, sort_keys=True, indent=1, default=str).encode()

    def _s3_key(self, name: str) -> str:
        return f"{self.prefix}{self.key}/{name}"


def _fx_graph_misses() -> int:
    from torch._dynamo.utils import counters

    return counters["inductor"]["fxgraph_cache_miss"]


def _split_s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ValueError(f"compile_cache_s3: {url!r} is not an s3://bucket/prefix/ URL")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def _default_s3_client() -> Any:
    import boto3

    # The default credential chain: on EKS the pod's Pod Identity role, scoped to the cache prefix.
    return boto3.client("s3")
