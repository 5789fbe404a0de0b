"""The ``boto-prom`` command (also ``python -m boto_prom``)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .settings import ConfigurationError
from ._version import __version__


def _positive(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boto-prom", description=__doc__)
    parser.add_argument("--version", action="version", version=f"boto-prom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run boto 2 and boto3 calls against an embedded AWS-protocol server "
        "(moto) and serve their metrics")
    demo.add_argument("--port", type=int, default=None,
                      help="metrics port (default: BOTO_PROM_PORT or 9875; 0 picks a free one)")
    demo.add_argument("--addr", default=None,
                      help="metrics address (default: BOTO_PROM_ADDR or 127.0.0.1)")
    demo.add_argument("--duration", type=_positive, default=0.0,
                      help="seconds to run (default: 0, until Ctrl-C)")
    demo.add_argument("--rate", type=_positive, default=20.0,
                      help="workload steps per second, each one or two AWS requests "
                      "(default: 20; 0 as fast as possible)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        try:
            import boto  # noqa: F401
            import moto  # noqa: F401
        except ImportError as exc:
            print(f"boto-prom: the demo needs boto 2 and moto, which did not import ({exc}); "
                  "install them with pip install 'boto-prom[demo]' on Python 3.11 or older.",
                  file=sys.stderr)
            return 2
        from .demo import run_demo

        try:
            run_demo(port=args.port, addr=args.addr, duration=args.duration, rate=args.rate)
        except ConfigurationError as exc:
            print(f"boto-prom: {exc} (On the command line: --port and --addr.)",
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("boto-prom demo: interrupted while starting", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
