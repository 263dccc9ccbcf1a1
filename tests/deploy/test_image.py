"""The container image, built from the Dockerfile and run as users run it.

`make image` (deploy/container/build-image) builds the real Dockerfile with buildah, with no Docker
engine and no registry: on a Debian bookworm base made by mmdebstrap. The image then runs as its
own user (uid 10001) under `buildah run` against the Cloudflare simulator on loopback (chroot
isolation shares the host's network): `--version`, `validate` and `run --once`, which must rotate
the one due account and write nothing outside /var/lib/rotator. The image's size is reported in the
terminal summary.

`make test` starts the build in the background (see the Makefile) and these tests run last
(tests/conftest.py); the fixture below runs the same script, which waits for that build and finds
its image, or builds it when run alone. Without
buildah or mmdebstrap the tests are skipped, saying so, unless `CI` is set: there they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudflare_sim import Simulator, SimulatorThread
from rotator import __version__
from tests.support.processes import events, log_lines

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "deploy" / "container" / "build-image"
BUILT = ROOT / "build" / "image.json"
TOKEN = "image-test-token"  # the simulator's made-up credential
UID = 10001  # the Dockerfile's USER, which Kubernetes' runAsNonRoot checks
CONFIG = "/etc/rotator/config.yaml"  # the image's ROTATOR_CONFIG, where users mount the config
STATE = "var/lib/rotator"  # the one place the daemon may write (state_file)
# What the image's last stage adds to its base: rotator's environment, its two directories, and
# its user and group (useradd rewrites these files and keeps a backup of each, `name-`).
IMAGE_ADDS = ("opt/rotator", "etc/rotator", STATE)
USER_DATABASE = {
    f"etc/{name}{suffix}" for name in ("passwd", "group", "shadow", "gshadow") for suffix in ("", "-")
}


@dataclass(frozen=True)
class Built:
    image: str
    base: str
    buildah: list[str]
    line: str  # the size, for the terminal summary

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.buildah, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr}"
        return result.stdout.strip()

    def inspect(self, image: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.ok("inspect", "--type", "image", image))
        return found


class ImageSummary:
    """A pytest plugin with one job: the image's size in the terminal summary, where CI shows it."""

    def __init__(self, line: str) -> None:
        self.line = line

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_sep("-", "container image")
        terminalreporter.write_line(self.line)


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> Built:
    missing = [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} missing: apt-get install buildah mmdebstrap (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the image must be built and run: {reason}")
        pytest.skip(reason)
    result = subprocess.run(
        [BUILD], capture_output=True, text=True, timeout=900, check=False, cwd=ROOT, stdin=subprocess.DEVNULL
    )
    output = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, "make image failed:\n" + "\n".join(output[-60:])
    facts = json.loads(BUILT.read_text(encoding="utf-8"))
    mb = {key: f"{facts[key] / 1e6:.0f} MB" for key in ("bytes", "base_bytes", "rotator_bytes")}
    line = (
        f"{facts['tag']} ({facts['image'][:12]}, on {facts['base_name']}): {mb['bytes']}"
        f" = base {mb['base_bytes']} + rotator {mb['rotator_bytes']}"
    )
    request.config.pluginmanager.register(ImageSummary(line), "rotator-image-summary")
    return Built(facts["image"], facts["base"], facts["buildah"], line)


@dataclass(frozen=True)
class Container:
    name: str
    root: Path  # the container's root filesystem, mounted on the host
    config: dict[str, Any]  # the image's OCI config: Entrypoint, Cmd, User, Env, Labels


@contextmanager
def container(built: Built, image: str) -> Iterator[Container]:
    """A working container of ``image``, its root filesystem mounted; removed afterwards."""
    name = f"rotator-test-{uuid.uuid4().hex[:12]}"  # unique: checkouts share buildah's storage
    built.ok("from", "--pull=never", "--name", name, image)
    try:
        yield Container(name, Path(built.ok("mount", name)), built.inspect(image)["OCIv1"]["config"])
    finally:
        built.run("rm", name)


Entry = tuple[int, int, int, object]


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path under ``root``: mode, owner, group, and a file's size and mtime or a link's target.

    A directory's own mtime is left out: what is added to or removed from it shows up by itself.
    """
    entries: dict[str, Entry] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory, name)
            info = path.lstat()
            detail: object = None
            if stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                detail = (info.st_size, info.st_mtime_ns)
            entries[path.relative_to(root).as_posix()] = (info.st_mode, info.st_uid, info.st_gid, detail)
    return entries


def changed(before: dict[str, Entry], after: dict[str, Entry]) -> set[str]:
    return {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}


def under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory + "/")


@dataclass(frozen=True)
class Ran:
    """One container of the image, three commands run in it, and what they left behind."""

    config: dict[str, Any]
    fresh: dict[str, Entry]  # the container's files before any command: the image's own
    version: subprocess.CompletedProcess[str]
    validate: subprocess.CompletedProcess[str]
    once: subprocess.CompletedProcess[str]
    written: dict[str, Entry | None]  # every path the commands changed: how it is now (None: removed)
    sim: Simulator


@pytest.fixture(scope="module")
def ran(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    # The config directory is mounted whole at /etc/rotator, read-only, as the Kubernetes
    # manifests mount their ConfigMap; readable by the image's user, as a ConfigMap's files are.
    etc = tmp_path_factory.mktemp("etc-rotator")
    etc.chmod(0o755)
    with (
        SimulatorThread(Simulator.with_accounts(3, token=TOKEN)) as running,
        container(built, built.image) as box,
    ):
        sim = running.sim
        config = etc / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "cloudflare": {"base_url": running.base_url, "timeout": "5s"},
                    "schedule": {"check_interval": "1h", "jitter": "0s"},
                    "http": {"listen": "127.0.0.1:0"},
                    "logging": {"format": "json"},
                    # The simulator's certs endpoints, on loopback: the publication check runs too.
                    "publication": {"certs_url": sim.certs_url_template},
                    "state_file": f"/{STATE}/state.json",
                    "accounts": [
                        {"name": f"account-{i}", "account_id": account}
                        for i, account in enumerate(sim.account_ids)
                    ],
                }
            ),
            encoding="utf-8",
        )
        config.chmod(0o644)
        entrypoint = box.config["Entrypoint"]

        def rotator(*args: str) -> subprocess.CompletedProcess[str]:
            # The image's own user, environment and entrypoint; the token only by environment.
            return built.run(
                "run",
                "--isolation",
                "chroot",
                "--volume",
                f"{etc}:/etc/rotator:ro",
                "--env",
                f"CLOUDFLARE_API_TOKEN={TOKEN}",
                box.name,
                "--",
                *entrypoint,
                *args,
            )

        before = snapshot(box.root)
        version = rotator("--version")
        validate = rotator("validate")
        once = rotator("run", "--once")
        after = snapshot(box.root)
        yield Ran(
            box.config,
            before,
            version,
            validate,
            once,
            {p: after.get(p) for p in changed(before, after)},
            sim,
        )


def test_image_reports_the_package_version(ran: Ran) -> None:
    assert ran.version.returncode == 0, ran.version.stderr
    assert ran.version.stdout.strip() == f"rotator {__version__}"
    assert ran.config["Labels"]["org.opencontainers.image.version"] == __version__


def test_image_runs_rotator_as_its_non_root_user_by_default(ran: Ran) -> None:
    assert ran.config["User"] == f"{UID}:{UID}"
    assert ran.config["Entrypoint"] == ["rotator"]
    assert ran.config["Cmd"] == ["run"]
    assert f"ROTATOR_CONFIG={CONFIG}" in ran.config["Env"]


def test_validate_accepts_the_mounted_config(ran: Ran) -> None:
    assert ran.validate.returncode == 0, ran.validate.stdout + ran.validate.stderr
    assert f"{CONFIG}: valid, 3 account(s)" in ran.validate.stdout.splitlines()


def test_run_once_rotates_the_due_account_through_loopback(ran: Ran) -> None:
    assert ran.once.returncode == 0, ran.once.stdout + ran.once.stderr
    due, *later = ran.sim.account_ids
    assert [r.source for r in ran.sim.rotations(due)] == ["api"]
    assert all(ran.sim.rotations(account) == [] for account in later)
    logs = log_lines(ran.once.stdout)
    assert events(logs, "key_rotated", account="account-0", account_id=due)
    assert {e["account"] for e in events(logs, "account_checked")} == {"account-0", "account-1", "account-2"}
    assert not [e for e in logs if e["event"] in ("certs_read_failed", "team_domain_unavailable")]
    assert TOKEN not in ran.once.stdout + ran.once.stderr


def test_rotator_writes_only_its_state_and_as_its_user(ran: Ran) -> None:
    outside = sorted(path for path in ran.written if not under(path, STATE))
    assert not outside, f"written outside /{STATE}: {outside}"
    state = ran.written.get(f"{STATE}/state.json")
    assert state is not None, f"no state file in /{STATE}: {sorted(ran.written)}"
    mode, uid, gid, _ = state
    assert stat.S_ISREG(mode)
    assert (uid, gid) == (UID, UID)


def test_image_is_its_base_plus_rotator_and_nothing_of_the_build(built: Built, ran: Ran) -> None:
    with container(built, built.base) as base:
        base_files = snapshot(base.root)
    added = changed(base_files, ran.fresh)
    # No source tree, wheel, pip cache or build secret: only rotator's parts and its user.
    stray = sorted(p for p in added if p not in USER_DATABASE and not any(under(p, d) for d in IMAGE_ADDS))
    assert not stray, f"the image changes its base beyond rotator's parts: {stray}"
    mode, uid, gid, _ = ran.fresh[STATE]
    assert (stat.S_IMODE(mode), uid, gid) == (0o750, UID, UID)
    assert "opt/rotator/bin/rotator" in ran.fresh


def test_image_ships_no_installer_and_exactly_the_locked_set(ran: Ran) -> None:
    """No pip, setuptools or wheel in the environment the image runs (nothing to install with at
    run time), and every package in it is the version requirements.txt locks."""
    site = [p for p in ran.fresh if p.startswith("opt/rotator/lib/") and "/site-packages/" in p]
    tops = {p.split("/site-packages/", 1)[1].split("/", 1)[0] for p in site}
    for installer in ("pip", "setuptools", "wheel", "_distutils_hack", "pkg_resources"):
        assert installer not in tops, f"{installer} is in the image's environment"
    assert not [p for p in ran.fresh if p.startswith("opt/rotator/bin/pip")]
    installed = {
        m[1].lower().replace("_", "-"): m[2]
        for t in tops
        if (m := re.fullmatch(r"(.+)-([^-]+)\.dist-info", t))
    }
    lock = {
        m[1].lower().replace("_", "-"): m[2]
        for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if (m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line))
    }
    assert {k: v for k, v in installed.items() if k != "rotator"} == lock
