"""The release: `python -m build` makes a wheel and an sdist that twine accepts, and the
wheel, installed into a new virtual environment, runs the quickstart.

Everything happens offline: the build uses this environment's hatchling
(`--no-isolation`), and the new environment gets the wheel alone (`--no-deps
--no-index`) plus a path to this environment's packages for the dependencies.
"""

import os
import re
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import httpx2
import pytest
from packaging.requirements import Requirement

import fastapi_jobpoller
from tests.helpers import REPOSITORY, free_port

pytestmark = pytest.mark.processes

VERSION = fastapi_jobpoller.__version__
# Generous bounds for a build, an install and an app start on a busy machine.
STEP_SECONDS = 120.0


def run(*command: str | Path, cwd: Path | None = None) -> str:
    completed = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=STEP_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist, and the wheel that `build` makes from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPOSITORY)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    return dist / f"fastapi_jobpoller-{VERSION}-py3-none-any.whl"


@pytest.fixture(scope="module")
def sdist(dist: Path) -> Path:
    return dist / f"fastapi_jobpoller-{VERSION}.tar.gz"


def test_the_build_makes_exactly_a_wheel_and_an_sdist_of_the_version(
    dist: Path, wheel: Path, sdist: Path
) -> None:
    assert sorted(path.name for path in dist.iterdir()) == sorted([wheel.name, sdist.name])


def test_the_version_is_the_latest_release_of_the_changelog() -> None:
    changelog = (REPOSITORY / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d[^\]]*)\] - \d{4}-\d{2}-\d{2}$", changelog, re.MULTILINE)
    assert releases, "the changelog has no release"
    assert releases[0] == VERSION
    assert changelog.index("## [Unreleased]") < changelog.index(f"## [{VERSION}]")


def test_twine_accepts_both_files(wheel: Path, sdist: Path) -> None:
    output = run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    assert output.count("PASSED") == 2, output


def test_the_wheel_holds_the_package_with_its_type_marker_and_license_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    info = f"fastapi_jobpoller-{VERSION}.dist-info/"
    assert all(name.startswith(("fastapi_jobpoller/", info)) for name in names), names
    assert "fastapi_jobpoller/py.typed" in names
    assert "fastapi_jobpoller/__init__.py" in names
    assert f"{info}licenses/LICENSE" in names


def test_the_wheels_metadata_matches_the_project(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = Parser().parsestr(
            archive.read(f"fastapi_jobpoller-{VERSION}.dist-info/METADATA").decode()
        )
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert metadata["Name"] == "fastapi-jobpoller"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == project["requires-python"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    required = {Requirement(r) for r in metadata.get_all("Requires-Dist", []) if "extra" not in r}
    assert required == {Requirement(r) for r in project["dependencies"]}
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert description.strip() == readme.strip()


def test_the_sdist_holds_what_building_testing_and_the_docs_need(sdist: Path) -> None:
    root = f"fastapi_jobpoller-{VERSION}/"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(root) for name in archive.getnames()}
    wanted = {
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "mkdocs.yml",
        "scripts/settings_docs.py",
        "scripts/reference_docs.py",
        "src/fastapi_jobpoller/py.typed",
        "docs/index.md",
        "examples/quickstart.py",
        "tests/conftest.py",
    }
    assert sorted(wanted - names) == []


# -- the installed wheel -------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel installed, and nothing of the repository.

    Its dependencies come from this environment's site-packages, added to the new one's
    path by a .pth file. Being a plain path, that directory's own .pth files are not
    run, so the editable install of the repository stays out of reach.
    """
    environment = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", environment)
    python = environment / "bin" / "python"
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel
    )
    installed = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (installed / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")
    return python


def test_the_installed_package_is_the_wheels_copy_of_the_version(
    installed_python: Path, tmp_path: Path
) -> None:
    output = run(
        installed_python,
        "-c",
        "import importlib.metadata, fastapi_jobpoller as p; "
        "print(p.__version__, importlib.metadata.version('fastapi-jobpoller'), p.__file__)",
        cwd=tmp_path,
    )
    version, distribution_version, location = output.split()
    assert (version, distribution_version) == (VERSION, VERSION)
    assert Path(location).is_relative_to(installed_python.parent.parent)


@pytest.fixture
def quickstart_server(installed_python: Path, tmp_path: Path) -> Iterator[str]:
    """The quickstart, copied out of the repository, served by uvicorn from the new venv."""
    app_directory = tmp_path / "app"
    app_directory.mkdir()
    source = (REPOSITORY / "examples" / "quickstart.py").read_text(encoding="utf-8")
    (app_directory / "quickstart.py").write_text(source, encoding="utf-8")
    port = free_port()
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("JOBPOLLER_")
    }
    environment.update(
        JOBPOLLER_DATABASE_URL=f"sqlite:///{tmp_path}/jobpoller.db",
        JOBPOLLER_IDLE_WAIT_SECONDS="0.05",
        PYTHONPATH="",
    )
    process = subprocess.Popen(
        [installed_python, "-m", "uvicorn", "quickstart:app", "--port", str(port)],
        cwd=app_directory,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STEP_SECONDS
        while True:
            assert process.poll() is None, process.stdout and process.stdout.read()
            try:
                httpx2.get(f"{base_url}/jobpoller/health")
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the quickstart did not start serving"
                time.sleep(0.1)
        yield base_url
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=STEP_SECONDS)
    assert process.returncode == 0, output


def test_the_installed_wheel_serves_the_quickstart(quickstart_server: str) -> None:
    health = httpx2.get(f"{quickstart_server}/jobpoller/health")
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    poll_id = httpx2.post(f"{quickstart_server}/start").json()["poll_id"]
    deadline = time.monotonic() + STEP_SECONDS
    while (status := httpx2.get(f"{quickstart_server}/status/{poll_id}").json())["state"] in (
        "pending",
        "running",
    ):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status["state"] == "succeeded"
    assert status["result"]["rows"] == 42
