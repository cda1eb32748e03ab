"""What a person sees and types at a real terminal: each question is on the screen before any
key is pressed and stays there (the live view steps aside while it is open), the keys answer
it, and the hosts end up as answered. Run in a pty behind a terminal emulator (tests/screen.py),
with make and invoke exactly as a user types them, and the hosts' real state asserted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.screen import DOWN, ENTER, SPACE, Terminal

from .conftest import REPO, STATE, Fleet, Lab

PROFILE = "/nix/var/nix/profiles/system"


def answer_env(lab: Lab) -> dict[str, str]:
    """Nothing approved up front: an empty NIXTASKS_YES, as an outer make exports it."""
    return {**lab.env, "NIXTASKS_YES": "", "NIXTASKS_REASON": ""}


def make_at_terminal(fleet: Fleet, *args: str) -> Terminal:
    return Terminal(["make", f"INVOKE={sys.executable} -m invoke", *args], cwd=fleet.path, env=answer_env(fleet.lab))


def invoke_at_terminal(path: Path, env: dict[str, str], *args: str, cols: int = 120) -> Terminal:
    return Terminal([sys.executable, "-m", "invoke", *args], cwd=path, env=env, cols=cols)


def asked(term: Terminal, question: str, after: str | None = None) -> str:
    """`question` is on the screen with no key pressed (once `after` is, which may take a build)
    and is still there 3 s later: nothing draws over it."""
    if after is not None:
        term.wait_for(after, timeout=300)
    term.wait_for(question, timeout=20 if after else 300)
    return term.holds(question, 3)


def unchanged(fleet: Fleet, host: str) -> None:
    assert fleet.lab.current_system(host) == "" and fleet.lab.profile(host) == ""


def generation_numbers(lab: Lab, host: str) -> list[int]:
    out = lab.exec(host, "nix-env", "-p", PROFILE, "--list-generations").stdout
    return [int(line.split()[0]) for line in out.splitlines() if line.strip()]


# --- a, b: make host/web1/switch ---------------------------------------------------------------


def test_make_switch_asks_on_the_screen_and_yes_switches(fleet):
    with make_at_terminal(fleet, "host/web1/switch") as term:
        asked(term, "Switch web1 (root@web1) to nixos-system-web1-1.0? (y/N)", after="Plan: switch on 1 host(s)")
        term.send("y" + ENTER)
        screen = term.wait_for(r"web1\s+ok\s", regex=True, timeout=300)  # the report
        assert "HOST" in screen and "OUTCOME" in screen, screen
        assert term.wait_exit() == 0, term.scrollback()
    new = fleet.build("web1")
    assert fleet.lab.current_system("web1") == new == fleet.lab.profile("web1")


def test_make_switch_declined_changes_nothing(fleet):
    with make_at_terminal(fleet, "host/web1/switch") as term:
        asked(term, "Switch web1 (root@web1) to nixos-system-web1-1.0? (y/N)", after="Plan: switch on 1 host(s)")
        term.send("n")
        term.wait_for(r"web1\s+declined", regex=True, timeout=60)
        assert term.wait_exit() == 2, term.scrollback()  # make's own code for a failed recipe
        assert re.search(r"^error: .*web1", term.scrollback(), re.M)
        assert re.search(r"make: \*\*\* \[.*host/web1/switch\] Error 3$", term.scrollback(), re.M)  # invoke's
    unchanged(fleet, "web1")


# --- c: one question for two hosts, then the checkbox ---------------------------------------------


def test_choosing_a_subset_shows_the_select_then_the_checkbox(fleet):
    with invoke_at_terminal(fleet.path, answer_env(fleet.lab), "switch", "--host", "web1,web2") as term:
        screen = asked(term, "Switch web1, web2 (2 hosts)?", after="Plan: switch on 2 host(s)")
        for choice in ("No", "Yes, all 2 hosts", "Choose hosts..."):
            assert choice in screen, screen
        term.send(DOWN + DOWN)  # No, Yes all, Choose hosts...
        term.wait_for("» Choose hosts...", timeout=10)
        term.send(ENTER)
        screen = asked(term, "Which hosts?")
        assert re.search(r"○ web1\b", screen) and re.search(r"○ web2\b", screen), screen
        term.send(SPACE)  # tick web1, the first
        term.wait_for("● web1", timeout=10)
        term.send(ENTER)
        term.wait_for(r"web2\s+not selected", regex=True, timeout=300)
        assert term.wait_exit() == 0  # what was picked went out fine; the other host was only not selected
    assert fleet.lab.current_system("web1") == fleet.build("web1") == fleet.lab.profile("web1")
    unchanged(fleet, "web2")


# --- d: gc and rollback ----------------------------------------------------------------------------


def two_releases(fleet: Fleet, host: str) -> tuple[str, str]:
    """Generation 1 runs release 1.0, generation 2 (running) 1.1; deployed without a terminal."""
    assert fleet.invoke("switch", "--host", host, "--yes").returncode == 0
    first = fleet.build(host)
    fleet.set_knobs(host, release="1.1")
    assert fleet.invoke("switch", "--host", host, "--yes").returncode == 0
    return first, fleet.build(host)


def test_a_gc_and_a_rollback_ask_on_the_screen(fleet):
    first, second = two_releases(fleet, "web1")
    env = answer_env(fleet.lab)
    with invoke_at_terminal(fleet.path, env, "gc", "--host", "web1", "--keep", "1") as term:
        asked(term, "Delete 1 generation(s) on web1 and collect garbage? (y/N)", after="web1: delete generation(s) 1")
        term.send("n")
        assert term.wait_exit() == 3, term.scrollback()
    assert generation_numbers(fleet.lab, "web1") == [1, 2]
    fleet.lab.exec("web1", "test", "-e", first)  # nothing collected
    assert fleet.lab.current_system("web1") == second == fleet.lab.profile("web1")

    with invoke_at_terminal(fleet.path, env, "rollback", "--host", "web1") as term:
        asked(term, "Roll back web1 (root@web1) to generation 1 (nixos-system-web1-1.0)? (y/N)",
              after="Plan: rollback on 1 host(s)")
        term.send("y" + ENTER)
        assert term.wait_exit() == 0, term.scrollback()
    assert fleet.lab.current_system("web1") == first == fleet.lab.profile("web1")


# --- e, f: the README's lines in a repository made by `nixtasks init` ----------------------------


def as_typed(env: dict[str, str]) -> dict[str, str]:
    """`invoke` and `make` as a user types them: the `invoke` found first on PATH is this
    interpreter's, which runs this checkout (PYTHONPATH)."""
    return {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}


@pytest.fixture(scope="module")
def init_repo(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/fleet as a user's flake repository, set up by `nixtasks init`, its inventory's
    targets pointed at the lab's hosts, committed."""
    repo = tmp_path_factory.mktemp("init") / "flake"
    shutil.copytree(REPO / "examples" / "fleet", repo)
    git = ["git", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "config", "user.name", "nixtasks test"], check=True)
    subprocess.run([*git, "config", "user.email", "test@nixtasks.invalid"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    proc = subprocess.run([sys.executable, "-c", "from nixtasks.cli.program import main; main()", "init"], cwd=repo,
                          env=lab.env, text=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr
    toml = repo / "nixtasks.toml"
    text = toml.read_text()
    assert '[defaults]\nflake = "."\n' in text and '[hosts.web1]\ntarget = "web1"' in text, text
    text = text.replace('[defaults]\nflake = "."\n', f'[defaults]\nflake = "."\nssh_config = "{STATE}/ssh/config"\n'
                        'nix_options = ["--option", "substituters", ""]\n')
    toml.write_text(re.sub(r'target = "(web1|web2|db1)"', r'target = "root@\1"', text))
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "nixtasks init"], check=True)
    return repo


def init_build(lab: Lab, repo: Path, host: str) -> str:
    return Fleet(lab, repo).build(host)


def test_make_host_switch_in_an_init_repository(fleet, init_repo):
    env = as_typed(answer_env(fleet.lab))
    with Terminal(["make", "host/web1/switch"], cwd=init_repo, env=env) as term:
        asked(term, "Switch web1 (root@web1) to nixos-system-web1-1.0? (y/N)", after="Plan: switch on 1 host(s)")
        term.send("y" + ENTER)
        assert term.wait_exit() == 0, term.scrollback()
    new = init_build(fleet.lab, init_repo, "web1")
    assert fleet.lab.current_system("web1") == new == fleet.lab.profile("web1")


def rollback_42(repo: Path, env: dict[str, str]) -> Terminal:
    typed = ["invoke", "rollback", "--host", "web1", "--generation", "42"]  # the README's line, as typed
    return Terminal(typed, cwd=repo, env=env, cols=200)


def invoke_yes(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=repo, env=env, text=True, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_rollback_to_generation_42_in_an_init_repository(fleet, init_repo):
    lab = fleet.lab
    env = as_typed(answer_env(lab))
    first = init_build(lab, init_repo, "web1")
    at_init = {**lab.env, "NIXTASKS_YES": "1"}
    assert invoke_yes(init_repo, at_init, "switch", "--host", "web1").returncode == 0
    Fleet(lab, init_repo).set_knobs("web1", release="1.1")
    try:
        assert invoke_yes(init_repo, at_init, "switch", "--host", "web1").returncode == 0
        second = init_build(lab, init_repo, "web1")
    finally:
        Fleet(lab, init_repo).git("reset", "-q", "--hard", "HEAD~1")
    assert lab.current_system("web1") == second and generation_numbers(lab, "web1") == [1, 2]

    with rollback_42(init_repo, env) as term:  # no generation 42: one error naming the ones there are
        assert term.wait_exit() == 2, term.scrollback()
        errors = [line for line in term.scrollback().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: web1: there is no generation 42; it has 1, 2"), errors
    assert lab.current_system("web1") == second == lab.profile("web1")
    assert generation_numbers(lab, "web1") == [1, 2]

    lab.exec("web1", "ln", "-s", first, "/nix/var/nix/profiles/system-42-link")  # a profile that reached 42
    assert generation_numbers(lab, "web1") == [1, 2, 42]
    with rollback_42(init_repo, env) as term:
        asked(term, "Roll back web1 (root@web1) to generation 42 (nixos-system-web1-1.0)? (y/N)",
              after="Plan: rollback on 1 host(s)")
        term.send("y" + ENTER)
        assert term.wait_exit() == 0, term.scrollback()
    assert lab.current_system("web1") == first == lab.profile("web1")
    assert lab.exec("web1", "readlink", PROFILE).stdout.strip() == "system-42-link"  # it boots generation 42



def test_a_deploy_piped_to_tee_asks_on_the_terminal_and_logs_the_plan_and_report(fleet, tmp_path):
    """`invoke switch --host web1 | tee deploy.log`: the question goes to the controlling
    terminal (it was refused as "no terminal"), the plan and the report to the log as well."""
    log = tmp_path / "deploy.log"
    line = f"{sys.executable} -m invoke switch --host web1 | tee {log}"
    with Terminal(["sh", "-c", line], cwd=fleet.path, env=fleet.lab.env) as term:
        term.wait_for("Switch web1 (root@web1) to nixos-system-web1-1.0?", timeout=120)
        term.holds("Switch web1 (root@web1)", 2)
        term.send("y")
        assert term.wait_exit() == 0, term.scrollback()
        shown = term.scrollback()
    assert shown.count("Plan: switch on 1 host(s)") == 1  # once on the terminal, through tee
    logged = log.read_text()
    assert "Plan: switch on 1 host(s)" in logged and "web1 -> root@web1" in logged
    assert "HOST" in logged and "web1  ok" in logged  # the report table
    assert "Switch web1" not in logged  # the question was the terminal's
    assert fleet.lab.current_system("web1") == fleet.build("web1") == fleet.lab.profile("web1")
