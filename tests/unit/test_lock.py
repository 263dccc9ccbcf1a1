"""requirements.txt, the image's runtime set (``make lock``), against pyproject.toml's ranges."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes), from the lock's requirement blocks."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line):
            name = canonicalize_name(match[1])
            entries[name] = (match[2], [])
        elif name and (found := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            entries[name][1].append(found[1])
    return entries


def runtime() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in project["dependencies"]]


def test_every_runtime_dependency_is_locked_within_its_range() -> None:
    lock = locked()
    for requirement in runtime():
        name = canonicalize_name(requirement.name)
        assert name in lock, (
            f"{name} is a dependency in pyproject.toml but not in requirements.txt: make lock"
        )
        version = lock[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.txt pins {name}=={version}, outside pyproject.toml's"
            f" {requirement.specifier}: make lock"
        )


def test_every_locked_package_is_pinned_with_hashes_and_only_the_runtime_set() -> None:
    lock = locked()
    assert len(lock) >= len(runtime())
    for name, (version, hashes) in lock.items():
        assert hashes, f"{name}=={version} has no --hash: pip --require-hashes would refuse the lock"
    # The simulator's and the tests' packages never reach the image.
    for other in ("cryptography", "pytest", "pyjwt", "uv", "pip", "setuptools", "wheel"):
        assert other not in lock, f"{other} is locked into the runtime set"
    assert "make lock" in LOCK.read_text(encoding="utf-8").splitlines()[1]


def test_the_image_installs_exactly_the_lock_and_ships_no_installer() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "--require-hashes" in dockerfile and "-r requirements.txt" in dockerfile
    assert "--no-deps" in dockerfile
    assert "venv --without-pip /opt/rotator" in dockerfile
    assert "!requirements.txt" in (ROOT / ".dockerignore").read_text(encoding="utf-8")
