"""The commands the docs tell a newcomer to type, typed: the README's config and commands, and the
rehearsal in docs/rehearse.md, run as written (ports moved to free ones) with the real processes."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from cloudflare_sim import SimulatorThread
from tests.support.processes import daemon, environment, events, free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
REHEARSE = (ROOT / "docs" / "rehearse.md").read_text(encoding="utf-8")
MakeSimulator = Callable[..., SimulatorThread]


def section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n")[1].split("\n## ")[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def shell(
    command: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """One documented command line, with `rotator` and `python` the ones under test."""
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- the README ---------------------------------------------------------------------------------


def readme_config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The README's complete config as config.yaml, and the variables its `export` line sets."""
    part = section(README, "A complete config")
    (config,) = blocks(part, "yaml")
    (console,) = blocks(part, "console")
    path = tmp_path / "config.yaml"
    path.write_text(config, encoding="utf-8")
    exported = next(line for line in console.splitlines() if line.startswith("$ export "))
    names = [word.split("=")[0] for word in shlex.split(exported.removeprefix("$ export "))]
    return path, {name: f"value-of-{name.lower()}" for name in names}


def test_the_readmes_config_is_valid_as_its_console_shows(tmp_path: Path) -> None:
    _, variables = readme_config(tmp_path)
    (console,) = blocks(section(README, "A complete config"), "console")
    command = next(line for line in console.splitlines() if line.startswith("$ rotator "))
    shown = console.split(command + "\n")[1].rstrip("\n")

    result = shell(command.removeprefix("$ "), tmp_path, environment(token=None, **variables))

    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == shown
    assert result.stderr == ""


def test_the_readmes_config_checks_three_accounts_against_the_simulator(
    make_simulator: MakeSimulator, tmp_path: Path
) -> None:
    """`rotator check -c config.yaml` from the Quick start, on the README's config with only the API
    pointed at the simulator: three accounts read, the dry-run one in dry run."""
    config, variables = readme_config(tmp_path)
    settings = yaml.safe_load(config.read_text())
    sim = make_simulator(
        0, token="value-of-cloudflare_api_token", tokens={"value-of-sandbox_api_token": "write"}
    )
    for account in settings["accounts"]:
        sim.sim.add_account(account["account_id"], days_until_next_rotation=2)
    settings["cloudflare"]["base_url"] = sim.base_url
    settings["publication"] = {"certs_url": sim.sim.certs_url_template}
    settings["notify"]["webhooks"][0]["url"] = f"http://127.0.0.1:{free_port()}/"
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    quick = section(README, "Quick start")
    (line,) = [x for x in blocks(quick, "sh")[1].splitlines() if " rotator check " in x]
    command = line.split("#")[0].replace("CLOUDFLARE_API_TOKEN=... ", "") + " --json"

    result = shell(command, tmp_path, environment(token=None, **variables))

    assert result.returncode == 0, result.stderr
    accounts = {a["account"]: a for a in json.loads(result.stdout)["accounts"]}
    assert set(accounts) == {"production", "partners", "sandbox"}
    assert accounts["production"]["action"] == "rotate"
    assert (accounts["sandbox"]["dry_run"], accounts["sandbox"]["reason"]) == (True, "dry_run")
    assert accounts["partners"]["set_interval"] == 30


def test_the_readmes_version_command() -> None:
    quick = section(README, "Quick start")
    assert "rotator --version" in blocks(quick, "sh")[1]
    result = shell("rotator --version", ROOT, environment())
    assert result.returncode == 0 and result.stdout.startswith("rotator "), result


# --- docs/rehearse.md ---------------------------------------------------------------------------


def test_the_rehearsal_in_the_docs_rotates_and_sees_the_key_published(tmp_path: Path) -> None:
    """Every step of docs/rehearse.md (the venv aside: these tests run in one): the simulator as
    written, the curl, rehearsal.yaml as written, `check`, then `run` until the new key is served at
    the simulator's certs endpoint (publication.certs_url)."""
    sh = blocks(REHEARSE, "sh")[1]
    (config,) = blocks(REHEARSE, "yaml")
    lines = [line for line in sh.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]
    start, curl, check, run = lines
    assert start.startswith("python -m cloudflare_sim --listen 127.0.0.1:8787 ") and start.endswith(" &")
    options = shlex.split(start.removesuffix(" &"))[3:]
    options[1] = "127.0.0.1:0"
    simulator = subprocess.Popen(
        [sys.executable, "-m", "cloudflare_sim", *options], stdout=subprocess.PIPE, text=True
    )
    try:
        assert simulator.stdout is not None
        port = json.loads(simulator.stdout.readline())["base_url"].split(":")[2].split("/")[0]

        def here(text: str) -> str:
            return text.replace("127.0.0.1:8787", f"127.0.0.1:{port}").replace("127.0.0.1:9464", listen)

        listen = f"127.0.0.1:{free_port()}"
        (tmp_path / "rehearsal.yaml").write_text(here(config.split("\n", 1)[1]), encoding="utf-8")
        env = environment(token=None)
        added = shell(here(curl) + " --fail --silent", tmp_path, env)
        assert added.returncode == 0, added.stderr
        checked = shell(check + " --json", tmp_path, env)
        assert checked.returncode == 0, checked.stderr
        (account,) = json.loads(checked.stdout)["accounts"]
        assert (account["action"], account["reason"]) == ("rotate", "due")

        assert run == "CLOUDFLARE_API_TOKEN=rehearsal rotator run -c rehearsal.yaml"
        with daemon(tmp_path / "rehearsal.yaml", environment(token="rehearsal")) as running:
            running.wait_for("key_published", lambda: events(running.logs, "key_published"), timeout=60)
            assert events(running.logs, "key_rotated")
            assert not events(running.logs, "certs_read_failed")
            assert running.get("/").status_code == 200
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
        if simulator.stdout is not None:
            simulator.stdout.close()


@pytest.mark.parametrize(
    "page",
    [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_relative_link_in_the_docs_leads_somewhere(page: Path) -> None:
    text = re.sub(r"^```.*?^```$", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans: a regex's "](" is not a link
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.relative_to(ROOT)}: link to {target}: no such file"
        if anchor and file.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", file.read_text(encoding="utf-8"), flags=re.MULTILINE)
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
            assert anchor in slugs, f"{page.relative_to(ROOT)}: link to {target}: no such heading"


def _documented_commands() -> list[tuple[str, str]]:
    """Every `rotator ...` line in a code block of the README and docs/: (page, line)."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in re.findall(
            r"^```\w*\n(.*?)^```$", page.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL
        ):
            for line in block.splitlines():
                line = line.strip().removeprefix("$ ")
                if not re.match(r"^([A-Z_]+=\S+ )*rotator ", line) or " [" in line:  # [...]: a synopsis
                    continue
                words = shlex.split(line, comments=True)
                words = words[: words.index("|")] if "|" in words else words
                words = [w for w in words if "=" not in w or w.startswith("-")]  # VAR=value first
                if words and words[0] == "rotator" and len(words) > 1:
                    found.append((str(page.relative_to(ROOT)), " ".join(words)))
    return found


@pytest.mark.parametrize(("page", "command"), _documented_commands())
def test_every_rotator_command_in_the_docs_is_one_rotator_accepts(page: str, command: str) -> None:
    from rotator.cli import _parser

    words = shlex.split(command)[1:]
    if words == ["--version"]:
        return
    _parser().parse_args(words)  # SystemExit (a failed test) when the docs show a command that is not one


def test_the_docs_show_rotator_commands_at_all() -> None:
    pages = {page for page, _ in _documented_commands()}
    assert {"README.md", "docs/rehearse.md", "docs/command-line.md", "docs/reference/cli.md"} <= pages
