"""``boto-prom run``: metrics for a Python program without changing a line of it.

``boto-prom run [options] -- COMMAND [ARGS...]`` puts its options into ``BOTO_PROM_*``
variables (:func:`boto_prom.settings.run_environment`), puts the directory of boto-prom's
``sitecustomize`` first on ``PYTHONPATH`` and replaces itself with COMMAND (``exec``): the
program keeps boto-prom's process id, so its exit status, signals, standard streams and
``sys.argv`` are its own. Python imports ``sitecustomize`` at start-up, before the program's
first line, and ours calls :func:`start` here, then the ``sitecustomize`` it hid, if any.

:func:`start`, in the process ``boto-prom run`` started (the *main* process):

1. resolves every setting, as :func:`boto_prom.enable_metrics` would; a bad one ends the
   program's start with one sentence on stderr and exit status 2, before its first line;
2. starts the metrics server, and arranges the push at exit (also on SIGTERM) when asked;
3. waits for the program to import botocore (boto3 imports it) or boto 2 and then enables
   metrics for every call (``enable_metrics()``), so a program that never touches AWS never
   imports an SDK.

Without a multiprocess directory the program's own child processes run as they would
without boto-prom (the hook's directory is taken off their ``PYTHONPATH``): they are not
recorded. With one, every Python process the program starts records into it, and the main
process serves the sum.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from .settings import RUN_ENV, ConfigurationError, RunSettings, resolve, resolve_run

HOOK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")
"""The directory ``boto-prom run`` puts first on ``PYTHONPATH``: it holds only
``sitecustomize.py``."""

FLAGS = {"port": "--port", "addr": "--addr", "web_config": "--web-config", "csv_path": "--csv",
         "allowed_services": "--allowed-services", "ignored_actions": "--ignored-actions",
         "max_label_sets": "--max-label-sets", "gateway": "--push", "job": "--job",
         "grouping_key": "--grouping-key"}
"""``boto-prom run``'s options by the setting (``enable_metrics``' argument) each one sets:
an error about one of these settings names the option (:meth:`ConfigurationError.naming`)."""

SDK_MODULES = ("botocore", "boto")
"""Importing either enables metrics: botocore (every client, of any session; boto3 imports
it) and boto 2 (its connections)."""


def exec_command(command: List[str], variables: Mapping[str, str]) -> int:
    """Replace this process with command, under boto-prom's start-up hook; returns only when
    the command cannot be started (127 not found, 126 not runnable, as shells do)."""
    from .settings import run_environment

    env = run_environment(variables, HOOK_DIR)
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        _say(f"{command[0]}: command not found.")
        return 127
    except OSError as exc:
        _say(f"cannot run {command[0]} ({exc.strerror or exc}).")
        return 126
    return 126  # pragma: no cover - exec does not return


def start() -> None:
    """Set up metrics for this process as ``boto-prom run`` asked; called by its
    ``sitecustomize`` before the program starts. Never raises: a bad setting exits 2 with one
    sentence, anything else costs one line on stderr and the program runs without metrics."""
    try:
        run = resolve_run(HOOK_DIR)
        if run is None:
            return
        _tidy_environment(run)
        _start(run)
    except ConfigurationError as exc:
        _say(exc.naming(FLAGS))
        _flush()
        os._exit(2)  # SystemExit here would be a fatal error in Python's start-up
    except Exception as exc:  # noqa: B902 - the program must start regardless
        _say(f"metrics are off for this program: {type(exc).__name__}: {exc}")


def _tidy_environment(run: RunSettings) -> None:
    """Leave the program the environment it would have had, but for what its children need."""
    sys.path[:] = [p for p in sys.path
                   if not p or os.path.realpath(p) != os.path.realpath(HOOK_DIR)]
    from .settings import multiprocess_dir_from_env

    if multiprocess_dir_from_env() is not None:
        os.environ[RUN_ENV] = "child"  # the Python processes it starts record, not serve
        return
    os.environ.pop(RUN_ENV, None)
    if run.python_path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = run.python_path


def _start(run: RunSettings) -> None:
    settings = resolve(start_server=run.main)
    if settings.disabled:
        return
    if run.main:
        from .exposition import serve

        # A busy port ends the start, in one sentence; no advice for programs that start a
        # server in each worker: boto-prom run starts the one server itself.
        serve(settings.server, settings.registry, api_advice=False)
        if settings.push is not None:
            from .push import push_at_exit, push_on_sigterm

            push_at_exit(settings.push, settings.registry)
            push_on_sigterm()
    if settings.multiprocess_dir is not None:
        atexit.register(_mark_dead, settings.multiprocess_dir)
    when_imported(SDK_MODULES, lambda: _enable(run.main))


def _mark_dead(directory: str) -> None:
    """Drop this process's live gauges from the directory; the pid is read at exit, since a
    forked child that exits through Python runs its parent's atexit functions."""
    try:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(os.getpid(), directory)
    except Exception:  # noqa: B902 - at exit: never a traceback
        pass


def _enable(main: bool) -> None:
    from .enable import enable_metrics

    try:
        enable_metrics(start_server=main)
    except Exception as exc:  # noqa: B902 - inside the program's import: never raise into it
        _say(f"metrics are off for this program's AWS calls: {exc}")


# --- after an import --------------------------------------------------------------------------

class _AfterImport:
    """A ``sys.meta_path`` finder that runs then() once, right after the first of names has
    been imported (executed to its end), and then takes itself out."""

    def __init__(self, names: Iterable[str], then: Callable[[], None]) -> None:
        self._names = frozenset(names)
        self._then = then
        self._finding = threading.local()
        self._fired = False
        self._lock = threading.Lock()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self._names or getattr(self._finding, "busy", False):
            return None
        self._finding.busy = True
        try:
            spec = self._find(fullname, path, target)
            loader = getattr(spec, "loader", None)
            exec_module = getattr(loader, "exec_module", None)
            if exec_module is None:
                return spec

            def exec_then(module: Any) -> None:
                try:
                    exec_module(module)
                finally:
                    del loader.exec_module  # the loader's own method again
                self.fire()

            # On the loader object, not a wrapper: module.__loader__ stays the real one.
            loader.exec_module = exec_then
            return spec
        except Exception:  # noqa: B902 - the import goes on as it would without us
            return None
        finally:
            self._finding.busy = False

    def _find(self, fullname: str, path: Any, target: Any) -> Any:
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def fire(self) -> None:
        with self._lock:
            if self._fired:
                return
            self._fired = True
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        self._then()


def when_imported(names: Iterable[str], then: Callable[[], None]) -> None:
    """Run then() once: now if one of names is imported already, else right after the first
    of them is."""
    names = tuple(names)
    if any(name in sys.modules for name in names):
        then()
        return
    sys.meta_path.insert(0, _AfterImport(names, then))


# --- the command line -------------------------------------------------------------------------

def variables(*, port: Optional[int] = None, addr: Optional[str] = None,
              web_config: Optional[str] = None, csv: Optional[str] = None,
              allowed_services: Optional[str] = None, ignored_actions: Optional[str] = None,
              max_label_sets: Optional[int] = None, push: Optional[str] = None,
              job: Optional[str] = None, grouping_key: Optional[str] = None,
              multiprocess: Optional[str] = None,
              detailed_metrics: Optional[bool] = None) -> Dict[str, str]:
    """The variables ``boto-prom run``'s options stand for (an option left None sets none)."""
    names = {
        "port": "BOTO_PROM_PORT", "addr": "BOTO_PROM_ADDR", "web_config": "BOTO_PROM_WEB_CONFIG",
        "csv": "BOTO_PROM_CSV", "allowed_services": "BOTO_PROM_ALLOWED_SERVICES",
        "ignored_actions": "BOTO_PROM_IGNORED_ACTIONS",
        "max_label_sets": "BOTO_PROM_MAX_LABEL_SETS", "push": "BOTO_PROM_PUSHGATEWAY",
        "job": "BOTO_PROM_PUSH_JOB", "grouping_key": "BOTO_PROM_PUSH_GROUPING_KEY",
        "multiprocess": "PROMETHEUS_MULTIPROC_DIR",
        "detailed_metrics": "BOTO_PROM_DETAILED_METRICS",
    }
    given = dict(port=port, addr=addr, web_config=web_config, csv=csv,
                 allowed_services=allowed_services, ignored_actions=ignored_actions,
                 max_label_sets=max_label_sets, push=push, job=job, grouping_key=grouping_key,
                 multiprocess=multiprocess,
                 detailed_metrics=None if detailed_metrics is None else int(detailed_metrics))
    out = {names[k]: str(v) for k, v in given.items() if v is not None}
    for name in ("BOTO_PROM_WEB_CONFIG", "BOTO_PROM_CSV", "PROMETHEUS_MULTIPROC_DIR"):
        if name in out:  # the program may change directory before reading them
            out[name] = os.path.abspath(out[name])
    return out


def _say(message: str) -> None:
    try:
        print(f"boto-prom: {message}", file=sys.stderr)
    except Exception:  # noqa: B902 - no stderr (pythonw, closed): nothing to say it on
        pass


def _flush() -> None:
    try:
        sys.stderr.flush()
    except Exception:  # noqa: B902
        pass


__all__ = ["HOOK_DIR", "SDK_MODULES", "exec_command", "start", "variables", "when_imported"]
