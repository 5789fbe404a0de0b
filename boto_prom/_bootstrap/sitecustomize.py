"""boto-prom run's start-up hook: Python imports it (as ``sitecustomize``) from the directory
``boto-prom run`` put first on PYTHONPATH, before the program's first line.

It sets up metrics (:func:`boto_prom.run.start`, which never raises), then runs the
``sitecustomize`` this one hides, if there is one further along ``sys.path``, as Python would
have: its errors are reported by Python's ``site`` module exactly as without boto-prom. Only
the standard library is used here, so an interpreter that cannot import boto_prom (another
Python than the one boto-prom is installed in) still starts, with one line on stderr.
"""


def _boto_prom() -> None:
    import sys

    try:
        from boto_prom.run import start
    except Exception as exc:  # noqa: B902 - the program must start regardless
        print(f"boto-prom: metrics are off for this program: this Python ({sys.executable}) "
              f"cannot import boto_prom ({exc}); install boto-prom in it.", file=sys.stderr)
        return
    start()


def _chain() -> None:
    """Run the sitecustomize further along sys.path, as the module named sitecustomize."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    path = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_boto_prom()
_chain()
