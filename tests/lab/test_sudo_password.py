"""Password sudo end to end: a lab host whose `deploy` user needs a password for sudo is
deployed, rolled back and garbage-collected with the password typed at a real terminal (a
pty), a wrong one stops before anything changes, no terminal is refused, the password file
works from make, and the doctor says what to do. The password never shows up anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.screen import ENTER, Terminal

from .conftest import Lab, labctl, repo_with_hosts

HOST = "pw1"
PASSWORD = "c0rrect-h0rse!"


class PwFleet:
    def __init__(self, lab: Lab, path: Path) -> None:
        self.lab, self.path = lab, path
        self.journal = lab.workspace / "pw-journal.jsonl"
        self.env = {**lab.env, "NIXTASKS_JOURNAL": str(self.journal), "NIXTASKS_YES": "", "NIXTASKS_REASON": ""}

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.path), *args], check=True, text=True,
                              capture_output=True).stdout

    def release(self, value: str) -> None:
        data = json.loads((self.path / "hosts.json").read_text())
        data["hosts"][HOST]["release"] = value
        (self.path / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
        self.git("commit", "-qam", f"release {value}")

    def terminal(self, *args: str, answers: tuple[tuple[str, str], ...],
                 argv: list[str] | None = None) -> tuple[int, str]:
        """invoke ARGS (or `argv`) at a terminal: each prompt on the screen before its keys are
        typed and still there a moment later (nothing draws over it); the exit code and all the
        screen showed."""
        with Terminal(argv or [sys.executable, "-m", "invoke", *args], cwd=self.path, env=self.env,
                      cols=250) as term:
            for prompt, keys in answers:
                term.wait_for(prompt, timeout=300)
                term.holds(prompt, 1)
                term.send(keys)
            return term.wait_exit(), term.scrollback()

    def invoke(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=self.path, text=True, capture_output=True,
                              env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL, timeout=300)

    def password_file(self, directory: Path) -> dict[str, str]:
        """The environment that gives the password without a terminal."""
        secret = directory / "sudo-password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        return {"NIXTASKS_SUDO_PASSWORD_FILE": str(secret)}

    def generations(self) -> list[str]:
        out = self.lab.exec(HOST, "nix-env", "-p", "/nix/var/nix/profiles/system", "--list-generations").stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def nowhere(self, *texts: str) -> None:
        """The password is in no output, no journal (deployer or host) and no host log."""
        host_side = self.lab.exec(HOST, "sh", "-c", "cat /var/lib/nixtasks/journal.jsonl 2>/dev/null; "
                                  "journalctl -b --no-pager -q 2>/dev/null").stdout
        deployer = self.journal.read_text() if self.journal.exists() else ""
        for text in (*texts, host_side, deployer):
            assert PASSWORD not in text


@pytest.fixture(scope="module")
def pw_repo(lab: Lab) -> Iterator[Path]:
    labctl("up", HOST, "--sudo-password", PASSWORD)
    path = repo_with_hosts(lab.workspace / "pwfleet", {HOST: f"deploy@{HOST}"}, {HOST: "pw"}, "pw")
    try:
        yield path
    finally:
        labctl("down", HOST, check=False)


@pytest.fixture
def pw(lab: Lab, pw_repo: Path) -> PwFleet:
    fl = PwFleet(lab, pw_repo)
    fl.git("reset", "-q", "--hard", "pw")
    fl.git("clean", "-qfdx")
    labctl("reset", HOST)  # the password comes back with the fresh layer
    fl.journal.unlink(missing_ok=True)
    return fl


def typed(password: str) -> tuple[str, str]:
    return (f"sudo password for deploy@{HOST}:", password + ENTER)


YES = ("(y/N)", "y")


def test_switch_rollback_and_gc_with_the_password_typed_at_a_terminal(pw, tmp_path):
    assert pw.lab.ssh(f"deploy@{HOST}", "sudo -n true", check=False).returncode == 1  # it really needs one
    make = ["make", f"INVOKE={sys.executable} -m invoke", f"host/{HOST}/switch", "ASK_SUDO_PASSWORD=1"]
    code, screen = pw.terminal(answers=(typed(PASSWORD), YES), argv=make)
    assert code == 0, screen
    first = pw.lab.current_system(HOST)
    assert first.endswith(f"nixos-system-{HOST}-1.0") and pw.lab.profile(HOST) == first
    pw.release("1.1")
    code, screen1 = pw.terminal("switch", "--host", HOST, "--ask-sudo-password", answers=(typed(PASSWORD), YES))
    assert code == 0, screen1
    assert pw.lab.current_system(HOST).endswith("-1.1")  # with the watchdog armed and confirmed
    code, screen2 = pw.terminal("rollback", "--host", HOST, "--ask-sudo-password", answers=(typed(PASSWORD), YES))
    assert code == 0, screen2
    assert pw.lab.current_system(HOST) == first == pw.lab.profile(HOST)
    given = pw.password_file(tmp_path)
    assert pw.invoke("switch", "--host", HOST, "--yes", "--ask-sudo-password", env=given).returncode == 0
    assert pw.generations() == ["1", "2"]  # generation 2 again: Nix reuses the newest for the same system
    code, screen3 = pw.terminal("gc", "--host", HOST, "--keep", "1", "--ask-sudo-password",
                                answers=(typed(PASSWORD), YES))
    assert code == 0, screen3
    assert pw.generations() == ["2"] and pw.lab.current_system(HOST).endswith("-1.1")
    outcomes = [r["outcome"] for r in map(json.loads, pw.journal.read_text().splitlines())]
    assert [o for o in outcomes if o != "started"] == ["ok"] * 5, outcomes
    pw.nowhere(screen, screen1, screen2, screen3)


def test_a_wrong_password_is_one_error_before_anything_changes(pw):
    code, screen = pw.terminal("switch", "--host", HOST, "--ask-sudo-password", answers=(typed("wrong"),))
    assert code == 1, screen
    errors = [line for line in screen.splitlines() if "error:" in line]  # after the prompt's escape codes
    assert len(errors) == 1, screen
    assert f"deploy@{HOST}: sudo did not accept the password" in errors[0]
    assert "Nothing was changed on any host" in errors[0]
    assert "(y/N)" not in screen  # stopped before the plan's question
    assert pw.lab.current_system(HOST) == "" and pw.lab.profile(HOST) == ""
    lock = pw.lab.exec(HOST, "systemctl", "is-active", "nixtasks-lock.service", check=False)
    assert lock.returncode != 0
    pw.nowhere(screen)


def test_without_a_terminal_it_refuses_and_the_password_file_works_from_make(pw, tmp_path):
    proc = pw.invoke("switch", "--host", HOST, "--ask-sudo-password", "--yes")
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "NIXTASKS_SUDO_PASSWORD_FILE" in errors[0], proc.stderr
    assert pw.lab.current_system(HOST) == ""
    secret = tmp_path / "sudo-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o644)
    env = {"NIXTASKS_SUDO_PASSWORD_FILE": str(secret), "NIXTASKS_ASK_SUDO_PASSWORD": "1"}
    proc = pw.invoke("switch", "--host", HOST, "--yes", env=env)
    assert proc.returncode == 2 and f"chmod 600 {secret}" in proc.stderr, proc.stderr
    secret.chmod(0o600)
    made = subprocess.run(["make", f"INVOKE={sys.executable} -m invoke", f"host/{HOST}/switch", "YES=1"],
                          cwd=pw.path, text=True, capture_output=True, env={**pw.env, **env},
                          stdin=subprocess.DEVNULL, timeout=300)
    assert made.returncode == 0, made.stderr
    assert pw.lab.current_system(HOST).endswith("-1.0")
    # --dry-run and --verbose print what would run: sudo reads the password, it is never an argument.
    pw.release("1.1")
    proc = pw.invoke("switch", "--host", HOST, "--yes", "--dry-run", "--verbose", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "sudo --reset-timestamp --stdin --prompt= env -i" in proc.stderr
    pw.nowhere(made.stdout, made.stderr, proc.stdout, proc.stderr)


WANTS_PASSWORD = (f"error: {HOST} (deploy@{HOST}): sudo there wants a password and none was given; nothing was "
                  "changed on any host. Give it with --ask-sudo-password (NIXTASKS_SUDO_PASSWORD_FILE without a "
                  "terminal), or let nixtasks' commands run without one: invoke sudoers --user deploy")


def untouched(pw: PwFleet) -> None:
    """Nothing activated, no boot entry, no lock left, and not even the system copied there."""
    assert pw.lab.current_system(HOST) == "" and pw.lab.profile(HOST) == ""
    assert pw.lab.exec(HOST, "systemctl", "is-active", "nixtasks-lock.service", check=False).returncode != 0
    copied = pw.lab.exec(HOST, "sh", "-c", f"ls /nix/store | grep -e '-nixos-system-{HOST}-' || true").stdout
    assert copied.strip() == "", copied


def test_without_the_password_the_first_read_stops_the_deploy_in_one_line(pw):
    """Not `locked` after the copy and the approval, with `invoke unlock` to try: the deploy's
    first read of the host asks sudo, as the password check does, and stops before any copy."""
    for argv in (["switch", "--host", HOST, "--yes"], ["boot", "--host", HOST, "--yes"],
                 ["rollback", "--host", HOST, "--yes"]):
        proc = pw.invoke(*argv)
        assert proc.returncode == 1, proc.stderr
        assert errors_of(proc.stderr) == [WANTS_PASSWORD], proc.stderr
        assert "Plan:" not in proc.stderr and "locked" not in proc.stderr and "unlock" not in proc.stderr
        untouched(pw)
    made = subprocess.run(["make", f"INVOKE={sys.executable} -m invoke", f"host/{HOST}/switch", "YES=1"],
                          cwd=pw.path, text=True, capture_output=True, env=pw.env, stdin=subprocess.DEVNULL,
                          timeout=300)
    assert made.returncode != 0 and WANTS_PASSWORD in made.stderr.splitlines(), made.stderr
    code, screen = pw.terminal("switch", "--host", HOST, answers=())  # a terminal, but never asked
    assert code == 1 and "(y/N)" not in screen, screen
    assert "sudo there wants a password and none was given" in screen
    untouched(pw)
    records = [json.loads(line) for line in pw.journal.read_text().splitlines()] if pw.journal.exists() else []
    assert [r["outcome"] for r in records if r["outcome"] == "locked"] == []
    # stage runs nothing as root: no password wanted; its apply does, and stops the same way.
    staged = pw.invoke("stage", "--host", HOST)
    assert staged.returncode == 0, staged.stderr
    applied = pw.invoke("apply", "nixtasks-plan.json", "--yes")
    assert applied.returncode == 1 and errors_of(applied.stderr) == [WANTS_PASSWORD], applied.stderr
    assert pw.lab.current_system(HOST) == "" and pw.lab.profile(HOST) == ""


def errors_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error" in line]


def test_the_doctor_says_sudo_needs_a_password_and_how_to_give_it(pw, tmp_path):
    proc = pw.invoke("doctor", "--host", HOST)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "needs a password for sudo" in proc.stdout and "--ask-sudo-password" in proc.stdout, proc.stdout
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    proc = pw.invoke("doctor", "--host", HOST, "--ask-sudo-password", env={"NIXTASKS_SUDO_PASSWORD_FILE": str(secret)})
    assert "sudo and the password given" in proc.stdout, proc.stdout
    assert "[FAIL] pw1: sudo" not in proc.stdout


def test_the_sudoers_snippet_with_a_password_allows_exactly_nixtasks_commands(pw, tmp_path):
    """`invoke sudoers --password`: only nixtasks' commands, each with the password."""
    snippet = pw.invoke("sudoers", "--user", "deploy", "--password")
    assert snippet.returncode == 0 and "deploy ALL=(root) PASSWD: NIXTASKS" in snippet.stdout
    pw.lab.exec(HOST, "sh", "-c", f"cat > /etc/sudoers.d/deploy <<'EOF'\n{snippet.stdout}EOF\n"
                "chmod 0440 /etc/sudoers.d/deploy && visudo -cf /etc/sudoers.d/deploy")
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    env = {"NIXTASKS_SUDO_PASSWORD_FILE": str(secret)}
    proc = pw.invoke("switch", "--host", HOST, "--yes", "--ask-sudo-password", env=env)
    assert proc.returncode == 0, proc.stderr
    assert pw.lab.current_system(HOST).endswith("-1.0")
    # Anything else is still refused, password or not.
    other = pw.lab.ssh(f"deploy@{HOST}", f"printf '%s\\n' '{PASSWORD}' | sudo -S -p '' id", check=False)
    assert other.returncode != 0 and "not allowed" in other.stderr, other.stderr
