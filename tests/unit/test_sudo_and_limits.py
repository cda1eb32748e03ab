"""Password sudo and time limits as values: the argv that carries no password, the password
first on standard input, the ssh limits, the inventory's keys, and a limit that names itself."""

from __future__ import annotations

import copy
import os
import shlex
from pathlib import Path

import pytest

from nixtasks import inventory
from nixtasks.actions import access
from nixtasks.cli import options, sudo
from nixtasks.errors import InventoryError, Refused, UsageError
from nixtasks.host import commands
from nixtasks.host.runner import Result, ShRunner
from nixtasks.models import LOCAL, Command, Limit, Policy, Secret, SudoPassword, Target

DEPLOY = Target("web1", "deploy", sudo=True)
ROOT = Target("db1", "root")
PATH = "/nix/store/abc-nixos-system-web1-1.0"


def test_with_a_password_sudo_reads_it_from_stdin_and_the_words_after_sudo_stay_the_same():
    cmd = commands.set_profile(PATH)
    plain = commands.on_host(cmd)
    given = commands.on_host(cmd, password=True)
    assert plain[:2] == ("sudo", "-n")
    assert given[:4] == ("sudo", "--reset-timestamp", "--stdin", "--prompt=")
    assert plain[2:] == given[4:]  # what the sudoers snippet matches
    argv = commands.ssh_argv(cmd, DEPLOY, ("-o", "BatchMode=yes"), password=True)
    assert argv[-1].startswith("sudo --reset-timestamp --stdin --prompt= ")
    # Root needs no sudo, and a command that is not root's gets none, password or not.
    assert "sudo" not in commands.ssh_argv(cmd, ROOT, (), password=True)[-1]
    assert "sudo" not in commands.ssh_argv(commands.current_system(), DEPLOY, (), password=True)[-1]
    assert commands.local_argv(cmd, Target(sudo=True), password=True)[:3] == ("sudo", "--reset-timestamp", "--stdin")


def test_the_runner_puts_the_password_first_on_stdin_and_never_in_the_argv():
    with ShRunner() as runner:
        journal = commands.journal_append("/var/lib/nixtasks/journal.jsonl", '{"a": 1}')
        assert runner._stdin(journal, DEPLOY) == journal.stdin  # no password: the command's own data
        runner.set_sudo_password(DEPLOY, Secret("hunter2 with spaces"))
        assert runner.has_sudo_password(DEPLOY) and not runner.has_sudo_password(ROOT)
        assert runner._stdin(journal, DEPLOY) == 'hunter2 with spaces\n{"a": 1}\n'
        assert runner._stdin(commands.current_system(), DEPLOY) == ""  # sudo is not run: nothing to read it
        argv = runner.argv(journal, DEPLOY)
        assert "--stdin" in argv[-1] and not any("hunter2" in word for word in argv)
        assert runner._stdin(journal, ROOT) == journal.stdin
        runner.set_sudo_password(DEPLOY, None)
        assert runner.argv(journal, DEPLOY)[-1].startswith("sudo -n ")


def test_a_secret_never_shows_in_a_repr_or_a_message():
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret!r} {secret}"
    assert "hunter2" not in repr((secret, {"x": secret}))


def test_the_password_probe_runs_as_the_user_and_tries_sudo_n_first():
    probe = commands.sudo_password_probe()
    assert not probe.sudo and probe.stdin == ""  # the runner gives the password, not the value
    script = probe.argv[-1]
    listing = commands.on_host(commands.list_generations())
    assert script.index(shlex.join(listing)) < script.index("--stdin")
    assert commands.PASSWORD_NOT_NEEDED in script and commands.PASSWORD_OK in script


def test_ssh_limits_come_after_the_users_options_so_those_still_win():
    opts = commands.ssh_options("/tmp/x", ("-o", "ConnectTimeout=3"), connect_timeout=10, alive_interval=10,
                                alive_count=3)
    assert opts[-8:] == ("-o", "ConnectTimeout=3", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=10",
                         "-o", "ServerAliveCountMax=3")[-8:]
    assert opts.index("ConnectTimeout=3") < opts.index("ConnectTimeout=10")  # ssh keeps the first value
    assert "ConnectTimeout" not in " ".join(commands.ssh_options(None))  # 0: left to ssh and its config
    with ShRunner(connect_timeout=7, alive_interval=2, alive_count=4) as runner:
        for options in (runner.ssh_options, runner.fresh_ssh_options):
            assert options[options.index("ConnectTimeout=7") - 1:][:2] == ("-o", "ConnectTimeout=7")
            assert "ServerAliveInterval=2" in options and "ServerAliveCountMax=4" in options
        assert "ServerAliveInterval=2" in runner.nix_env()["NIX_SSHOPTS"]  # nix copy's ssh too


def test_inventory_defaults_and_keys(tmp_path: Path):
    (tmp_path / "nixtasks.toml").write_text("""
[defaults]
sudo_password = "ask"
ssh_connect_timeout = 5
ssh_alive_interval = 0
ssh_fast_confirmation = false

[hosts.web1]
target = "deploy@web1"

[hosts.db1]
target = "deploy@db1"
sudo_password = "per-host"

[policy]
copy_timeout = 7200
activation_timeout = 600
""")
    inv = inventory.load(env={}, cwd=tmp_path)
    d = inv.defaults
    assert (d.ssh_connect_timeout, d.ssh_alive_interval, d.ssh_alive_count) == (5, 0, 3)
    assert d.ssh_fast_confirmation is False and inventory.Defaults().ssh_fast_confirmation is True
    assert inventory.resolve_host(inv, "web1").sudo_password is SudoPassword.ASK
    assert inventory.resolve_host(inv, "db1").sudo_password is SudoPassword.PER_HOST
    assert inv.policy.copy_timeout == 7200 and inv.policy.copy_timeout.setting == "copy_timeout"
    assert inv.policy.activation_timeout == 600
    defaults = inventory.Defaults()
    assert (defaults.ssh_connect_timeout, defaults.ssh_alive_interval, defaults.ssh_alive_count) == (10, 10, 3)
    assert (Policy().copy_timeout, Policy().activation_timeout) == (3600, 1800)


@pytest.mark.parametrize(("text", "message"), [
    ('[defaults]\nsudo_password = "yes"\n', "defaults.sudo_password: expected one of 'none', 'ask', 'per-host'"),
    ('[hosts.web1]\nsudo_password = true\n', "hosts.web1.sudo_password: expected one of"),
    ("[defaults]\nssh_connect_timeout = 2.5\n", "defaults.ssh_connect_timeout: expected whole seconds from 0 to 600"),
    ("[defaults]\nssh_alive_count = 0\n", "defaults.ssh_alive_count: expected whole seconds from 1 to 100"),
    ("[policy]\ncopy_timeout = 0\n", "policy.copy_timeout: expected seconds from 1 to 604800"),
])
def test_bad_password_and_limit_keys_are_one_line(tmp_path: Path, text: str, message: str):
    (tmp_path / "nixtasks.toml").write_text(text)
    with pytest.raises(InventoryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        inventory.load(env={}, cwd=tmp_path)


def test_command_line_limits_name_their_setting_and_are_checked():
    flags = options.policy_flags(copy_timeout="90", activation_timeout="30.5")
    assert flags.copy_timeout == 90 and flags.copy_timeout.setting == "copy_timeout"
    chosen = options.policy(inventory.Inventory(source="x", root=Path(".")), options.Options(policy=flags))
    assert chosen.activation_timeout.setting == "activation_timeout" and chosen.activation_timeout == 30.5
    with pytest.raises(UsageError, match="--copy-timeout: 0 is too small"):
        options.policy_flags(copy_timeout="0")
    limit = Limit(5, "copy_timeout")
    assert copy.deepcopy(limit).setting == "copy_timeout"  # dataclasses.asdict deep-copies


def test_a_step_that_runs_out_of_time_names_its_limit():
    with ShRunner() as runner:
        result = runner.run(Command(("sleep", "5")), Target(), check=False, timeout=Limit(0.3, "copy_timeout"))
    assert result.exit_code == 124
    assert result.stderr.strip().endswith("timed out after 0.3 s (its limit: copy_timeout; raise it in [policy] "
                                          "for a slow host)")


def test_password_modes_follow_the_inventory_and_the_flag():
    shared = inventory.Inventory(source="x", root=Path("."), hosts={
        "web1": inventory.HostEntry("web1", target="deploy@web1"),
        "db1": inventory.HostEntry("db1", target="deploy@db1", sudo_password=SudoPassword.PER_HOST),
        "root1": inventory.HostEntry("root1", target="root@root1", sudo_password=SudoPassword.ASK)})
    hosts = tuple(inventory.resolve_host(shared, n) for n in ("web1", "db1", "root1"))
    modes = sudo.password_modes(options.Options(), hosts)
    assert modes == {hosts[1].target: SudoPassword.PER_HOST}  # root needs no sudo, web1 no password
    modes = sudo.password_modes(options.Options(ask_sudo_password=True), hosts)
    assert modes == {hosts[0].target: SudoPassword.ASK, hosts[1].target: SudoPassword.PER_HOST}


def test_no_terminal_and_no_password_file_is_refused(monkeypatch):
    monkeypatch.delenv("NIXTASKS_SUDO_PASSWORD_FILE", raising=False)
    monkeypatch.setattr(sudo, "has_terminal", lambda: False)
    host = inventory.resolve_host(inventory.Inventory(source="x", root=Path(".")), "web1")
    with ShRunner() as runner, pytest.raises(Refused, match="NIXTASKS_SUDO_PASSWORD_FILE"):
        sudo.give_sudo_passwords(options.Options(ask_sudo_password=True), (host,), runner)


def test_the_password_file_must_be_private_and_not_empty(tmp_path: Path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nsecond line\n")
    secret.chmod(0o640)
    with pytest.raises(UsageError, match=f"others may read it; chmod 600 {secret}"):
        sudo.read_password_file(str(secret))
    secret.chmod(0o600)
    assert sudo.read_password_file(str(secret)).value == "s3cret"
    secret.write_text("\n")
    with pytest.raises(UsageError, match="first line is empty"):
        sudo.read_password_file(str(secret))
    with pytest.raises(UsageError, match="cannot read it"):
        sudo.read_password_file(str(tmp_path / "missing"))
    assert os.stat(secret).st_mode & 0o077 == 0


def test_the_sudoers_snippet_with_a_password_asks_for_it():
    assert access.sudoers("deploy").endswith("deploy ALL=(root) NOPASSWD: NIXTASKS\n")
    with_password = access.sudoers("deploy", password=True)
    assert with_password.endswith("deploy ALL=(root) PASSWD: NIXTASKS\n") and "NOPASSWD" not in with_password
    def commands_of(snippet: str) -> str:
        return snippet.split("Cmnd_Alias")[1].rsplit("\n", 2)[0]

    assert commands_of(with_password) == commands_of(access.sudoers("deploy"))  # the same commands


def test_a_sudo_that_wants_a_password_says_how_to_give_it():
    # Root here, so no sudo runs: the command prints what sudo would, as a root command does.
    says = Command(("sh", "-c", "echo 'sudo: a password is required' >&2; exit 1"), sudo=True)
    with ShRunner() as runner:
        result = runner.run(says, Target(sudo=False), check=False)
        other = runner.run(Command(says.argv), Target(), check=False)  # not a root command: left as it is
    assert "sudo: a password is required (give it with --ask-sudo-password, NIXTASKS_SUDO_PASSWORD_FILE" in \
        result.stderr
    assert other.stderr.strip() == "sudo: a password is required"


SSH_G = """user root
hostname 10.250.0.11
gssapikexalgorithms gss-group14-sha256-,gss-curve25519-sha256-
kexalgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256
"""


def test_a_confirmation_prefers_curve25519_among_the_key_exchanges_the_config_allows():
    assert commands.fast_kex_first(SSH_G) == (
        "-o", "KexAlgorithms=curve25519-sha256,sntrup761x25519-sha512@openssh.com,curve25519-sha256@libssh.org,"
        "ecdh-sha2-nistp256")
    # A config that leaves curve25519 out, or already puts it first, is kept as it is.
    assert commands.fast_kex_first(SSH_G.replace("curve25519-sha256,", "")) == ()
    assert commands.fast_kex_first("kexalgorithms curve25519-sha256,sntrup761x25519-sha512@openssh.com\n") == ()
    assert commands.fast_kex_first("user root\n") == ()
    # A cheap post-quantum default (OpenSSH 9.9 on), or an order of the user's own, is kept.
    assert commands.fast_kex_first("kexalgorithms mlkem768x25519-sha256,sntrup761x25519-sha512,"
                                   "curve25519-sha256\n") == ()
    assert commands.fast_kex_first("kexalgorithms ecdh-sha2-nistp256,curve25519-sha256\n") == ()


def test_one_ssh_g_per_host_orders_new_connections_key_exchange_but_not_when_a_password_travels(monkeypatch):
    asked: list[tuple[str, ...]] = []

    def execute(argv: tuple[str, ...], *_args: object, **_kw: object) -> Result:
        asked.append(argv)
        return Result(0, SSH_G, "")

    target = Target("web1", "deploy", sudo=True)
    with ShRunner() as runner:
        monkeypatch.setattr(runner, "_execute", execute)
        cmd = Command(("true",))
        first = runner.argv(cmd, target, fresh=True)
        again = runner.argv(cmd, target, fresh=True)
        assert first == again and len(asked) == 1 and asked[0][:2] == ("ssh", "-G")
        # The checks' {address} comes from the same `ssh -G`: not asked again.
        assert runner.ssh_settings(target)["hostname"] == "10.250.0.11" and len(asked) == 1
        assert first[1:3] == ("-o", "KexAlgorithms=curve25519-sha256,sntrup761x25519-sha512@openssh.com,"
                                    "curve25519-sha256@libssh.org,ecdh-sha2-nistp256")
        assert "ControlPath=none" in first
        # The multiplexed connection keeps the config's order.
        assert not any(a.startswith("KexAlgorithms") for a in runner.argv(cmd, target))
        runner.set_sudo_password(target, Secret("pw"))
        assert not any(a.startswith("KexAlgorithms") for a in runner.argv(cmd, target, fresh=True))
    with ShRunner(fast_fresh_kex=False) as runner:  # ssh_fast_confirmation = false
        monkeypatch.setattr(runner, "_execute", execute)
        assert not any(a.startswith("KexAlgorithms") for a in runner.argv(cmd, target, fresh=True))
    assert len([a for a in asked if a[:2] == ("ssh", "-G")]) == 1  # none without the reordering


def test_a_build_hosts_gc_roots_are_a_new_private_directory_removed_at_close(monkeypatch):
    ran: list[tuple[str, ...]] = []
    answers = {"mkdir": Result(0, "", "")}

    def execute(argv: tuple[str, ...], *_args: object, **_kw: object) -> Result:
        words = (*argv[:-1], *shlex.split(argv[-1])) if argv[0] == "ssh" else argv  # the remote line's words
        ran.append(words)
        return next((answers[word] for word in words if word in answers), Result(0, "", ""))

    def on_host(program: str) -> list[tuple[str, ...]]:
        return [a[a.index(program):] for a in ran if a[0] == "ssh" and program in a]

    builder, other = Target("builder", "root"), Target("other", "root")
    runner = ShRunner(echo=lambda line: ran.append(("echo", line)))
    monkeypatch.setattr(runner, "_execute", execute)
    roots = runner.gc_roots_on(builder)
    assert roots is not None and roots.startswith("/tmp/nixtasks-roots-") and runner.gc_roots_on(builder) == roots
    assert on_host("mkdir") == [("mkdir", "-m", "700", "--", roots)]  # once
    assert runner.gc_roots_on(LOCAL) == runner.gc_roots
    answers["mkdir"] = Result(1, "", "mkdir: cannot create directory: Read-only file system")
    assert runner.gc_roots_on(other) is None  # the build goes on without one, and says so
    assert any(a[0] == "echo" and "no GC root" in a[1] and "Read-only" in a[1] for a in ran)
    runner.close()
    assert on_host("rm") == [("rm", "-rf", "--", roots)]
