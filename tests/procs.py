"""Helpers for tests that run child processes and real binaries, always with deadlines."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, Iterator, List, Optional, TypeVar

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boto2_worker.py")

T = TypeVar("T")


def free_port() -> int:
    """A loopback port that was free a moment ago (for binaries that need one on the command
    line)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    """A loopback port held (bound and listening) for the block, so a server cannot bind it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def child_env(**extra: str) -> Dict[str, str]:
    """The environment for a child: ours, minus boto-prom's own settings, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BOTO_PROM_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(EC2_USE_SIGV4="1", S3_USE_SIGV4="1")
    env.update(extra)
    return env


def start_worker(moto_port: int, calls: int, *flags: str,
                 env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """tests/boto2_worker.py as a child process, with pipes for stdin and stdout."""
    return subprocess.Popen(
        [sys.executable, WORKER, str(moto_port), str(calls), *flags],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env if env is not None else child_env(),
    )


def read_line(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    """The child's next stdout line, or an AssertionError (with its stderr) past the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            raise AssertionError(f"child said nothing within {timeout} s: {proc.stderr.read()}")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            line = proc.stdout.readline()
            if not line:
                proc.wait(timeout=10)
                raise AssertionError(f"child exited ({proc.returncode}) without a line: "
                                     f"{proc.stderr.read()}")
            return line.strip()


def finish(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    """Close the child's stdin, wait for it to exit 0, and return its stderr."""
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


def poll(check: Callable[[], Optional[T]], timeout: float, what: str,
         interval: float = 0.1) -> T:
    """check() until it returns something other than None, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, urllib.error.URLError) as exc:
            last, result = exc, None
        if result is not None:
            return result
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout} s (last error: {last})")


def get(url: str, timeout: float = 10.0, **kwargs) -> str:
    """The body of a GET, as text."""
    with urllib.request.urlopen(url, timeout=timeout, **kwargs) as response:
        return response.read().decode()


def start_binary(args: List[str], ready_url: str, timeout: float = 30.0,
                 **kwargs) -> subprocess.Popen:
    """A real binary (prometheus, pushgateway) on loopback, once ready_url answers."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)

    def ready() -> Optional[bool]:
        if proc.poll() is not None:
            raise AssertionError(f"{args[0]} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            get(ready_url, timeout=2)
        except urllib.error.HTTPError:
            pass  # an answer, even a 401, means it is up
        return True

    try:
        poll(ready, timeout, f"{os.path.basename(args[0])} ready")
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Terminate a child we started, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def start_pushgateway(binary: str, directory: str,
                      web_config_text: Optional[str] = None) -> "tuple[subprocess.Popen, str]":
    """A real prometheus-pushgateway on loopback, with no persistence (and with a web config
    if given); returns (process, URL)."""
    port = free_port()
    args = [binary, "--persistence.file=", f"--web.listen-address=127.0.0.1:{port}"]
    if web_config_text is not None:
        config = os.path.join(directory, f"gateway-web-{port}.yml")
        with open(config, "w") as f:
            f.write(web_config_text)
        args.append(f"--web.config.file={config}")
    url = f"http://127.0.0.1:{port}"
    return start_binary(args, f"{url}/-/ready"), url
