"""The ``boto-prom`` command (also ``python -m boto_prom``).

  boto-prom run [options] -- COMMAND [ARGS...]   a Python program with metrics on
  boto-prom serve [--multiprocess.dir=DIR]       serve a multiprocess directory
  boto-prom demo                                 an AWS workload against moto, with metrics

A bad setting ends a command with exit status 2 and one sentence naming the flag that set it
(:meth:`ConfigurationError.naming`), or the variable, when the environment set it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import List, Mapping, Optional, Tuple

from .settings import ConfigurationError
from ._version import __version__


# Each command's flags, by the setting (the API's argument) each one sets: an error about that
# setting names the flag instead (run's are run.FLAGS: the program's start names them too).
_DEMO_FLAGS = {"port": "--port", "addr": "--addr"}
# serve's one --web.listen-address=[HOST]:PORT sets addr and port: its host is named here, and
# the one error about its port (taken) is said by _serve in the flag's own form.
_SERVE_FLAGS = {"addr": "--web.listen-address's host", "web_config": "--web.config.file",
                "path": "--multiprocess.dir"}


def _refused(exc: ConfigurationError, flags: Mapping[str, str]) -> int:
    """Say a bad setting in one sentence, naming the flag it came from; exit status 2."""
    print(f"boto-prom: {exc.naming(flags)}", file=sys.stderr)
    return 2


def _positive(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boto-prom", description="Prometheus metrics for every AWS call a Python program "
        "makes through boto 2 or boto3/botocore. Also: python -m boto_prom.")
    parser.add_argument("--version", action="version", version=f"boto-prom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run AWS calls against an embedded AWS-protocol server (moto) and serve "
        "their metrics",
        description="Run a mix of AWS calls against moto's AWS-protocol server on loopback "
        "and serve their metrics: boto 2 and boto3 calls where boto 2 imports (Python 3.11 "
        "and older), boto3 calls alone where it does not; aiobotocore calls too where it is "
        "installed. Stops on Ctrl-C (SIGINT) or SIGTERM, with a summary line. Nothing leaves "
        "the machine.")
    demo.add_argument("--port", type=int, default=None,
                      help="metrics port (default: BOTO_PROM_PORT or 9875; 0 picks a free one)")
    demo.add_argument("--addr", default=None,
                      help="metrics address (default: BOTO_PROM_ADDR or 127.0.0.1)")
    demo.add_argument("--duration", type=_positive, default=0.0,
                      help="seconds to run (default: 0, until Ctrl-C)")
    demo.add_argument("--rate", type=_positive, default=20.0,
                      help="workload steps per second, each one or two AWS requests "
                      "(default: 20; 0 as fast as possible)")
    _run_parser(commands)
    _serve_parser(commands)
    return parser


def _run_parser(commands: "argparse._SubParsersAction") -> None:
    run = commands.add_parser(
        "run", usage="boto-prom run [options] -- COMMAND [ARGS...]",
        help="run a Python program with metrics of every AWS call it makes",
        description="Run COMMAND (python app.py, python -m pkg, gunicorn app:app...) with "
        "enable_metrics() in effect from its start: every boto3/botocore client and every "
        "boto 2 connection it creates is recorded. Each option sets the variable named "
        "in brackets, which it may be given as instead.")
    run.add_argument("--port", type=int, help="metrics port [BOTO_PROM_PORT] (default 9875; "
                     "0 picks a free one)")
    run.add_argument("--addr", help="metrics address [BOTO_PROM_ADDR] (default 127.0.0.1)")
    run.add_argument("--web-config", metavar="FILE", help="TLS and basic auth for /metrics, "
                     "as Prometheus's --web.config.file [BOTO_PROM_WEB_CONFIG]")
    run.add_argument("--csv", metavar="FILE",
                     help="also append every request to this CSV file [BOTO_PROM_CSV]")
    run.add_argument("--allowed-services", metavar="S3,EC2,...",
                     help="record only these services [BOTO_PROM_ALLOWED_SERVICES]")
    run.add_argument("--ignored-actions", metavar="ACTION,...",
                     help="never record these actions [BOTO_PROM_IGNORED_ACTIONS]")
    run.add_argument("--max-label-sets", type=int, metavar="N",
                     help="label sets kept before new ones are folded [BOTO_PROM_MAX_LABEL_SETS]")
    run.add_argument("--detailed-metrics", action="store_true", default=None,
                     help="also export the size histograms, per-attempt durations and finer "
                     "per-action buckets [BOTO_PROM_DETAILED_METRICS]")
    run.add_argument("--push", metavar="URL", help="push the metrics to this Pushgateway when "
                     "the program exits, also by exception or SIGTERM [BOTO_PROM_PUSHGATEWAY]; "
                     "credentials: BOTO_PROM_PUSH_USERNAME and BOTO_PROM_PUSH_PASSWORD")
    run.add_argument("--job", help="the push's job label (default: the script's name) "
                     "[BOTO_PROM_PUSH_JOB]")
    run.add_argument("--grouping-key", metavar="NAME=VALUE,...",
                     help="more labels naming the push's group [BOTO_PROM_PUSH_GROUPING_KEY]")
    run.add_argument("--multiprocess", metavar="DIR", help="every Python process the program "
                     "starts records into DIR (created if missing; give an empty one) and this "
                     "one serves the sum [PROMETHEUS_MULTIPROC_DIR]")
    run.add_argument("program", nargs=argparse.REMAINDER, metavar="COMMAND",
                     help="the program and its arguments, after --")


def _serve_parser(commands: "argparse._SubParsersAction") -> None:
    serve = commands.add_parser(
        "serve", help="serve the metrics of a multiprocess directory (a sidecar)",
        description="Serve /metrics summed over every process recording into a multiprocess "
        "directory, until SIGTERM or Ctrl-C.")
    serve.add_argument("--web.listen-address", dest="listen", metavar="[HOST]:PORT",
                       help="where to listen; :PORT is every interface (default: BOTO_PROM_ADDR "
                       "and BOTO_PROM_PORT, else 127.0.0.1:9875)")
    serve.add_argument("--web.config.file", dest="web_config", metavar="FILE",
                       help="TLS and basic auth (default: BOTO_PROM_WEB_CONFIG)")
    serve.add_argument("--multiprocess.dir", dest="directory", metavar="DIR",
                       help="the workers' directory (default: PROMETHEUS_MULTIPROC_DIR)")


def _listen_address(text: Optional[str]) -> Tuple[Optional[str], Optional[int]]:
    """(addr, port) of ``host:port``, ``:port`` (every interface) or ``[v6]:port``."""
    if text is None:
        return None, None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(
            f"--web.listen-address must be [HOST]:PORT, like :9875 or 127.0.0.1:9875, "
            f"not {text!r}.")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


def _serve(args: argparse.Namespace) -> int:
    from prometheus_client import REGISTRY

    from .exposition import DEFAULT_ADDR, DEFAULT_PORT, serve, stop_server
    from .settings import resolve_server

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Set SIGINT too: started in the background it may be ignored, and Ctrl-C should stop.
        signal.signal(signum, lambda *_: stop.set())
    try:
        addr, port = _listen_address(args.listen)
        settings = resolve_server(port, addr, web_config=args.web_config,
                                  multiprocess_dir=args.directory)
    except ConfigurationError as exc:
        return _refused(exc, _SERVE_FLAGS)
    try:
        # As start_multiprocess_server, less its advice to programs: this is the one server.
        server = serve(settings, REGISTRY, api_advice=False)
    except ConfigurationError as exc:
        if exc.setting != "port":
            return _refused(exc, _SERVE_FLAGS)
        port = DEFAULT_PORT if settings.port is None else settings.port
        print(f"boto-prom: port {port} on {settings.addr or DEFAULT_ADDR} is already in use; "
              "pass --web.listen-address=[HOST]:PORT with a free PORT, or PORT 0 to let the "
              "system pick one.", file=sys.stderr)
        return 2
    print(f"boto-prom: serving the multiprocess directory on {server.url}", file=sys.stderr,
          flush=True)
    while not stop.wait(3600):
        pass
    stop_server()
    return 0


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .run import FLAGS, exec_command, variables

    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        parser.error("run needs a command: boto-prom run [options] -- COMMAND [ARGS...]")
    if args.push is not None and args.multiprocess is not None:
        print("boto-prom: --push and --multiprocess do not go together (each worker would "
              "replace the others' push); scrape the multiprocess server instead.",
              file=sys.stderr)
        return 2
    if args.multiprocess is not None:
        import os

        try:
            os.makedirs(args.multiprocess, exist_ok=True)
        except OSError as exc:
            print(f"boto-prom: cannot create the multiprocess directory {args.multiprocess} "
                  f"({exc.strerror or exc}); pass a --multiprocess directory you may write.",
                  file=sys.stderr)
            return 2
    try:
        _check_run_options(args)
    except ConfigurationError as exc:
        return _refused(exc, FLAGS)
    return exec_command(command, variables(
        port=args.port, addr=args.addr, web_config=args.web_config, csv=args.csv,
        allowed_services=args.allowed_services, ignored_actions=args.ignored_actions,
        max_label_sets=args.max_label_sets, push=args.push, job=args.job,
        grouping_key=args.grouping_key, multiprocess=args.multiprocess,
        detailed_metrics=args.detailed_metrics))


def _check_run_options(args: argparse.Namespace) -> None:
    """Check run's options as the program's start will check the variables they set, so that
    a bad one is named by its flag, before the program starts."""
    from .settings import grouping_key_pairs, resolve, resolve_push

    def names(text: Optional[str]) -> Optional[List[str]]:
        listed = [part.strip() for part in (text or "").split(",") if part.strip()]
        return listed or None  # as the variable: empty is unset

    resolve(port=args.port, addr=args.addr, web_config=args.web_config, csv_path=args.csv,
            allowed_services=names(args.allowed_services),
            ignored_actions=names(args.ignored_actions), max_label_sets=args.max_label_sets)
    if args.push is not None:
        resolve_push(args.push, job=args.job or None,
                     grouping_key=grouping_key_pairs(args.grouping_key or "", "grouping_key"))


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args, parser)
    if args.command == "serve":
        return _serve(args)
    if args.command == "demo":
        try:
            import boto3  # noqa: F401
            import moto  # noqa: F401
        except ImportError as exc:
            print(f"boto-prom: the demo needs moto and boto3, which did not import ({exc}); "
                  "install them with pip install 'boto-prom[demo]'.", file=sys.stderr)
            return 2
        from .demo import run_demo

        try:
            run_demo(port=args.port, addr=args.addr, duration=args.duration, rate=args.rate)
        except ConfigurationError as exc:
            return _refused(exc, _DEMO_FLAGS)
        except KeyboardInterrupt:
            print("boto-prom demo: interrupted while starting", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
