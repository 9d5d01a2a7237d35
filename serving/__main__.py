"""python -m serving {serve, tiny-model, bench}. The GPU benchmark is `python -m benchmarks.gpu` (not in the image)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys


def _config_error(exc: Exception) -> int:
    from serving.core.logconfig import json_line

    # Exit 2 with one readable line (JSON like every other line the server writes), never a traceback.
    print(json_line("error", "serving", f"configuration error: {exc}"), file=sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    from serving.auth.sources import load_key_material
    from serving.core.logconfig import configure_logging
    from serving.core.settings import SettingsError, settings_from

    try:
        settings = settings_from(args)
        configure_logging(settings.log_level, settings.log_prompts)
        keys = load_key_material(settings)
    except SettingsError as exc:
        return _config_error(exc)
    from serving.model.prefetch import start_prefetch

    # Started before the heavy imports below so a cold disk read overlaps them.
    start_prefetch(settings.model)
    from serving.api.tls import TLSFileError, server_tls_from

    try:
        tls = server_tls_from(settings)
    except TLSFileError as exc:
        return _config_error(exc)
    from serving.runtime.server import build_state, serve

    try:
        state = build_state(settings, keys.master_keys, keys.signing_keys)
    except SettingsError as exc:
        return _config_error(exc)
    state.tls = tls
    return asyncio.run(serve(state))


def _tiny_model(args: argparse.Namespace) -> int:
    from serving.model.tiny import write_tiny_model, write_tiny_taesd

    print(write_tiny_model(args.out_dir, seed=args.seed))
    if args.taesd:
        print(write_tiny_taesd(args.taesd, seed=args.seed))
    return 0


def _dev_cert(args: argparse.Namespace) -> int:
    from serving.api.devcerts import write_local_pki

    paths = write_local_pki(args.out_dir, args.server_name)
    print(" ".join(f"{name}={path}" for name, path in paths.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # bench owns its flags; hand everything after the subcommand to it untouched.
    if argv and argv[0] == "bench":
        try:
            from loadtest.bench import main as bench_main
        except ImportError:
            # The load client is a separate package beside serving/ in the repository and not in the image.
            print("python -m serving bench needs the loadtest package (run it from the repository root: "
                  "python -m loadtest ...)", file=sys.stderr)
            return 2
        return bench_main(argv[1:]) or 0

    from serving.core.settings import add_serve_arguments

    parser = argparse.ArgumentParser(prog="python -m serving", description="edge-diffusion inference server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server", description="Every flag also reads SERVING_<FLAG> from the environment.")
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)
    tiny = sub.add_parser("tiny-model", help="write a tiny random-weight SD 2.x pipeline (no network)")
    tiny.add_argument("out_dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--taesd", metavar="DIR", help="also write a tiny AutoencoderTiny (for --stream-vae) to DIR")
    tiny.set_defaults(func=_tiny_model)
    dev_cert = sub.add_parser("dev-cert", help="write a throwaway CA (ca.crt) and serving pair (tls.crt, tls.key) for local TLS")
    dev_cert.add_argument("out_dir")
    dev_cert.add_argument("--server-name", default="inference.edge-diffusion.internal")
    dev_cert.set_defaults(func=_dev_cert)
    sub.add_parser("bench", help="HTTP load client (python -m serving bench --help)")
    args = parser.parse_args(argv)
    return args.func(args)


def _exit_now(code: int) -> None:
    """Flush the logs and leave without interpreter teardown.

    Tearing down torch, diffusers and their thread pools takes seconds after the server has already closed
    every connection; the drain contract (exit within --drain-timeout + 1 s) has no room for it, and nothing of
    the server's state needs finalizing.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main()
    if sys.argv[1:2] == ["serve"]:
        _exit_now(exit_code)
    sys.exit(exit_code)
