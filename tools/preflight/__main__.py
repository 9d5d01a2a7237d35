"""Command line of the preflight (see the package docstring)."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

import edge_config
from tools.preflight import run_checks
from tools.preflight.plan import render_pools
from tools.preflight.report import EXIT_BLOCKER, exit_code, render_table, summary
from tools.preflight.session import Clients, client_factory


def _context(overrides: list[str]) -> dict:
    """cdk.json's context with `-c key=value` overrides on top, the way the CDK CLI layers them for app.py."""
    from app import _cdk_json_context

    context = _cdk_json_context()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"-c expects key=value, got {item!r}")
        context[key] = value
    return context


def main(argv: list[str] | None = None, clients: Callable[[str], Clients] = client_factory) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.preflight", description=__doc__)
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="context override, as with cdk (e.g. -c edge.account=123456789012)")
    args = parser.parse_args(argv)
    try:
        config = edge_config.load_config(_context(args.context))
    except edge_config.ConfigError as exc:
        print(f"Invalid edge-diffusion config: {exc}", file=sys.stderr)
        return EXIT_BLOCKER
    print(f"preflight: account {config.account or '(from the credentials)'}, region {config.region}, "
          f"Kubernetes {config.kubernetes_version}, TLS mode {config.tls.mode}")
    rows = run_checks(config, render_pools(config), clients(config.region))
    print(render_table(rows))
    print(summary(rows))
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
