"""The sdist and the wheel as a release would build them: what they hold, and what their
metadata claims (the licence, the Pythons). .ci/test builds them once, runs twine check and
check-manifest on them, and points CI_DIST_DIR here; run alone, this file builds its own."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
# The Apache License 2.0 as the ASF publishes it (LICENSE-2.0.txt), appendix included; the same
# bytes as Debian's /usr/share/common-licenses/Apache-2.0.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


class Dists(NamedTuple):
    sdist: Path
    wheel: Path


@pytest.fixture(scope="session")
def dists(tmp_path_factory) -> Dists:
    """The sdist and the wheel .ci/test built, or, run alone, ones built here."""
    where = os.environ.get("CI_DIST_DIR")
    if not where:
        if importlib.util.find_spec("build") is None:
            message = "the build package is not installed (run .ci/setup python)"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        where = tmp_path_factory.mktemp("dist")
        subprocess.run([sys.executable, "-m", "build", "-q", "-o", str(where), str(ROOT)],
                       check=True, capture_output=True, timeout=600)
    (sdist,), (wheel,) = Path(where).glob("*.tar.gz"), Path(where).glob("*.whl")
    return Dists(sdist, wheel)


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(whl.read(name).decode())


def sdist_names(sdist: Path) -> set:
    """The sdist's file names, without its top directory (boto_prom-X.Y.Z/)."""
    with tarfile.open(sdist) as tar:
        return {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}


def test_licence_is_the_apache_2_0_text_unmodified():
    """LICENSE is the full Apache License 2.0, byte for byte as published."""
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256


def test_metadata_declares_the_licence_by_spdx_expression_and_file(dists):
    """Both distributions say Apache-2.0 the PEP 639 way, and carry the licence text."""
    meta = wheel_metadata(dists.wheel)
    assert tuple(map(int, meta["Metadata-Version"].split("."))) >= (2, 4)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["License"] is None
    assert not [c for c in meta.get_all("Classifier") if c.startswith("License ::")]
    with zipfile.ZipFile(dists.wheel) as whl:
        licence = [n for n in whl.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert [whl.read(n) for n in licence] == [(ROOT / "LICENSE").read_bytes()]
    assert "LICENSE" in sdist_names(dists.sdist)


def test_metadata_claims_from_the_oldest_classified_python_on(dists):
    """Requires-Python starts at the oldest Python the classifiers list, which .ci/test runs
    the installed wheel on, and a development status is given."""
    meta = wheel_metadata(dists.wheel)
    classifiers = meta.get_all("Classifier")
    pythons = sorted((tuple(map(int, m.group(1).split("."))) for m in
                      (re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", c)
                       for c in classifiers) if m))
    assert pythons and meta["Requires-Python"] == ">=%d.%d" % pythons[0]
    assert [c for c in classifiers if c.startswith("Development Status :: ")]


def test_wheel_holds_the_package_its_types_and_the_bootstrap_only(dists):
    """The wheel has every module of boto_prom/, py.typed and _bootstrap/sitecustomize.py, and
    nothing else but its metadata: no tests, no dashboards."""
    with zipfile.ZipFile(dists.wheel) as whl:
        names = set(whl.namelist())
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"boto_prom"}
    source = {str(p.relative_to(ROOT)) for p in (ROOT / "boto_prom").rglob("*.py")}
    assert source <= names
    assert {"boto_prom/py.typed", "boto_prom/_bootstrap/sitecustomize.py"} <= names


def test_sdist_ships_what_the_tests_and_the_readme_refer_to(dists):
    """The sdist carries the tests with their conftest and helper modules, and every file or
    directory of grafana/, prometheus/, benchmarks/ and tests/ that the README names."""
    names = sdist_names(dists.sdist)
    tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py")}
    assert {"tests/__init__.py", "tests/conftest.py"} <= tests <= names
    imported = set()
    for path in tests:
        imported.update(re.findall(r"^\s*(?:from|import) tests\.(\w+)",
                                   (ROOT / path).read_text(), re.M))
    assert imported and {f"tests/{module}.py" for module in imported} <= names
    readme = (ROOT / "README.md").read_text()
    # Relative paths only (not /etc/prometheus/...), not patterns (tests/test_<module>.py),
    # and not npm package names (@grafana/schema).
    named = set(re.findall(r"(?<![\w/.@-])((?:grafana|prometheus|benchmarks|tests)/[\w./-]*)"
                           r"(?![\w<])", readme))
    assert named
    for path in named:
        path = path.rstrip(".")
        assert path in names or any(n.startswith(path.rstrip("/") + "/") for n in names), path
