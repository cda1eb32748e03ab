import shlex
import subprocess

import pytest

from nixtasks.host import commands
from nixtasks.host.facts import facts_command
from nixtasks.models import Action, Command, Target

PATH = "/nix/store/abc-nixos-system-web1-1.0"
HOSTILE = [
    "a; touch /tmp/pwned",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "with space",
    "quote'single",
    'quote"double',
    "new\nline",
    "--option",
    "*",
    "",
]
ROOT = Target("10.250.0.11", "root")
DEPLOY = Target("web1", "deploy", sudo=True)


def test_one_evaluation_maps_each_configuration_to_its_paths():
    cmd = commands.nix_eval_systems("/repo", ["web1", "db1"], show_trace=True, nix_options=("--option", "a", "b"))
    assert cmd.argv[:9] == ("nix", "--extra-experimental-features", "nix-command flakes", "eval", "--json",
                            "--no-write-lock-file", "--show-trace", "--option", "a")
    assert cmd.argv[9:11] == ("b", "/repo#nixosConfigurations")
    apply = cmd.argv[-1]
    assert cmd.argv[-2] == "--apply" and '[ "web1" "db1" ]' in apply
    assert "toplevel.drvPath" in apply and "toplevel.outPath" in apply
    assert not cmd.changes


def test_realise_builds_derivations_by_path():
    assert commands.realise(["/nix/store/a.drv", "/nix/store/b.drv"]).argv == (
        "nix-store", "--realise", "--", "/nix/store/a.drv", "/nix/store/b.drv")
    assert commands.realise(["/nix/store/a.drv"], dry_run=True, nix_options=("--option", "x", "")).argv == (
        "nix-store", "--realise", "--dry-run", "--option", "x", "", "--", "/nix/store/a.drv")


def test_nix_copy_directions():
    base = ("nix", "--extra-experimental-features", "nix-command flakes", "copy")
    assert commands.nix_copy(PATH, to=ROOT).argv == (*base, "--to", "ssh://root@10.250.0.11", "--", PATH)
    builder = Target("db1")
    assert commands.nix_copy(PATH, to=DEPLOY, source=builder).argv == (
        *base, "--from", "ssh://db1", "--to", "ssh://deploy@web1", "--", PATH)
    assert commands.nix_copy_derivations(["/nix/store/x.drv"], to=builder).argv == (
        *base, "--derivation", "--to", "ssh://db1", "--", "/nix/store/x.drv")
    assert commands.nix_copy(PATH, to=ROOT).changes


def test_set_profile_needs_root_and_changes_the_host():
    cmd = commands.set_profile(PATH)
    assert cmd == Command(("nix-env", "-p", "/nix/var/nix/profiles/system", "--set", PATH), sudo=True, changes=True)


def test_activation_through_systemd_run():
    cmd = commands.switch_to_configuration(PATH, Action.SWITCH, systemd=True)
    assert cmd.argv == (
        "systemd-run", "-E", "LOCALE_ARCHIVE", "-E", "NIXOS_INSTALL_BOOTLOADER", "--collect", "--no-ask-password",
        "--pipe", "--quiet", "--wait", "--service-type=exec", "--unit=nixtasks-switch-to-configuration",
        "--property=ExecStopPost=-/bin/sh -c 'mkdir -p /run/nixtasks && : > /run/nixtasks/activation-done'",
        f"{PATH}/bin/switch-to-configuration", "switch")
    assert cmd.sudo and cmd.changes


def test_activation_without_systemd_runs_directly():
    cmd = commands.switch_to_configuration(PATH, Action.TEST, systemd=False)
    assert cmd.argv == (f"{PATH}/bin/switch-to-configuration", "test")


def test_dry_run_never_runs_an_activation_not_even_dry_activate():
    assert commands.switch_to_configuration(PATH, Action.DRY_ACTIVATE, systemd=True).changes


def test_ssh_argv_root_has_no_sudo_and_a_clean_env():
    argv = commands.ssh_argv(commands.current_system(), ROOT, ("-o", "BatchMode=yes"))
    assert argv == ("ssh", "-o", "BatchMode=yes", "root@10.250.0.11", "--",
                    f"env -i PATH={commands.REMOTE_PATH} readlink -e /run/current-system")


def test_ssh_argv_uses_sudo_n_only_for_root_commands_of_non_root_users():
    argv = commands.ssh_argv(commands.set_profile(PATH), DEPLOY, ())
    assert argv[:3] == ("ssh", "deploy@web1", "--") and argv[3].startswith("sudo -n env ")
    assert "sudo" not in commands.ssh_argv(commands.current_system(), DEPLOY, ())[-1]
    assert "sudo" not in commands.ssh_argv(commands.set_profile(PATH), ROOT, ())[-1]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_every_remote_argument_reaches_the_host_as_one_word(hostile):
    """The remote shell re-splits what ssh sends; quoting must make it a no-op."""
    cmd = Command(("echo", hostile, f"/nix/store/{hostile}"), sudo=True)
    argv = commands.ssh_argv(cmd, DEPLOY, ())
    remote_words = shlex.split(" ".join(argv[argv.index("--") + 1:]))
    assert remote_words == ["sudo", "-n", "env", "-i", f"PATH={commands.REMOTE_PATH}", "echo", hostile,
                            f"/nix/store/{hostile}"]


def test_local_commands_that_need_root_use_sudo_n_when_not_root():
    assert commands.local_argv(commands.set_profile(PATH), Target(sudo=True))[:3] == ("sudo", "-n", "env")
    assert commands.local_argv(commands.set_profile(PATH), Target(sudo=False))[:2] == ("env", "-i")
    assert commands.local_argv(commands.current_system(), Target(sudo=True)) == (
        "readlink", "-e", "/run/current-system")


def test_ssh_options_multiplex_in_batch_mode():
    opts = commands.ssh_options("/tmp/nixtasks-x", ("-p", "2222"), config="/etc/lab/config")
    assert opts == ("-F", "/etc/lab/config", "-o", "BatchMode=yes", "-o", "ControlMaster=auto", "-o",
                    "ControlPath=/tmp/nixtasks-x/%C", "-o", "ControlPersist=60", "-p", "2222")
    assert not any("StrictHostKeyChecking" in o for o in opts)


def test_close_master():
    assert commands.close_master(ROOT, ("-o", "x")) == ("ssh", "-o", "x", "-O", "exit", "root@10.250.0.11")


def test_diff_closures_and_queries():
    assert commands.diff_closures("/a", "/b").argv == (
        "nix", "--extra-experimental-features", "nix-command", "store", "diff-closures", "/a", "/b")
    assert commands.is_nixos_system(PATH).argv == ("test", "-f", f"{PATH}/nixos-version")


def test_failed_commands_are_named_briefly():
    from nixtasks.errors import describe

    assert describe(commands.nix_copy(PATH, to=ROOT).argv) == "nix copy"
    assert describe(commands.switch_to_configuration(PATH, Action.SWITCH, systemd=True).argv) == (
        "switch-to-configuration switch")
    assert describe(commands.switch_to_configuration(PATH, Action.TEST, systemd=False).argv) == (
        "switch-to-configuration test")
    assert describe(commands.set_profile(PATH).argv) == "nix-env"
    assert describe(commands.realise(["/nix/store/a.drv"]).argv) == "nix-store"


def test_closure_paths_go_to_the_host_on_stdin():
    cmd = commands.missing_paths(["/nix/store/a", "/nix/store/b"])
    assert cmd.argv == ("xargs", "-r", "nix-store", "--check-validity", "--print-invalid", "--")
    assert cmd.stdin == "/nix/store/a\n/nix/store/b\n"


def test_journal_records_go_to_the_host_on_stdin():
    cmd = commands.journal_append("/var/lib/nixtasks/journal.jsonl", '{"reason": "$(id); `id`"}')
    assert cmd.argv == ("dd", "of=/var/lib/nixtasks/journal.jsonl", "oflag=append", "conv=notrunc", "status=none")
    assert cmd.sudo
    assert cmd.stdin == '{"reason": "$(id); `id`"}\n'


def words_of(line: str) -> list[str]:
    """What a POSIX shell makes of a line: its words, as a program receives them."""
    proc = subprocess.run(["sh", "-c", f"for w in {line}; do printf '%s\\0' \"$w\"; done"], capture_output=True,
                          check=True)
    return proc.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize("cmd", [commands.set_profile(PATH), facts_command(), commands.journal_append("/j", "{}"),
                                 Command(("echo", *HOSTILE), sudo=True)])
def test_verbose_shows_each_command_as_a_line_a_shell_runs_exactly(cmd):
    """`--verbose` prints each command once, quoted once: pasted into a shell, it runs the same
    argv, and the host's shell then runs the same words."""
    options = commands.ssh_options("/tmp/ctl", ("-F", "/etc/lab/ssh_config"), "/etc/lab/ssh_config")
    argv = commands.ssh_argv(cmd, DEPLOY, options)
    line = commands.shown(argv)
    # the run's own connection sharing is left out: its socket is gone with the run
    assert words_of(line) == commands.without_run_sockets(argv)
    assert words_of(line)[:5] == ["ssh", "-F", "/etc/lab/ssh_config", "-o", "BatchMode=yes"]
    assert "Control" not in line and words_of(line)[-1] == argv[-1]
    assert words_of(argv[-1]) == list(commands.on_host(cmd, sudo=cmd.sudo))
    assert line.count("-F /etc/lab/ssh_config") == 1  # NIX_SSHOPTS repeating the inventory's config


def test_verbose_shows_the_ssh_options_nix_reaches_a_host_with():
    options = ("-F", "/etc/lab/ssh_config", "-o", "BatchMode=yes")
    line = commands.shown(commands.nix_copy(PATH, to=ROOT).argv, options)
    assert line.startswith("NIX_SSHOPTS='-F /etc/lab/ssh_config -o BatchMode=yes' nix ")
    assert commands.shown(commands.realise(["/nix/store/a.drv"]).argv, options).startswith("nix-store ")


def test_an_ssh_option_given_twice_with_one_value_is_given_once():
    assert commands.without_repeats(("-F", "a", "-o", "X=1", "-F", "a", "-o", "X=1", "-o", "X=2", "-v", "-v")) == (
        "-F", "a", "-o", "X=1", "-o", "X=2", "-v", "-v")


OLD_SYSTEM = "/nix/store/" + "a" * 32 + "-nixos-system-web1-1.0"
WATCHDOG_TIMER = "nixtasks-watchdog.timer loaded active waiting nixtasks watchdog"


@pytest.mark.parametrize(("running", "profile", "units", "expected", "code"), [
    (OLD_SYSTEM, "system-7-link", "", 7, 0),  # as the plan saw: the round trip goes on
    (OLD_SYSTEM, "/nix/var/nix/profiles/system-7-link", "", 7, 0),
    ("", "", "", None, 0),  # never activated, no profile
    ("/nix/store/other", "system-7-link", "", 7, commands.CHANGED),  # another deploy activated meanwhile
    (OLD_SYSTEM, "system-8-link", "", 7, commands.CHANGED),  # or moved the profile
    (OLD_SYSTEM, "system-7-link", "", None, commands.CHANGED),
    (OLD_SYSTEM, "system-7-link", WATCHDOG_TIMER, 7, commands.CHANGED),  # an earlier deploy's watchdog pending
])
def test_unchanged_since_the_plan_exits_changed_for_anything_the_plan_did_not_see(tmp_path, running, profile,
                                                                                  units, expected, code):
    """The guard of the activation's round trip, run by `sh` with the host's readlink and
    systemctl played by scripts."""
    for name, body in {"readlink": f'case "$*" in "-e /run/current-system") echo "{running}";; '
                                   f'"/nix/var/nix/profiles/system") echo "{profile}";; esac',
                       "systemctl": f'[ -z "{units}" ] || echo "{units}"'}.items():
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    cmd = commands.unchanged_since(OLD_SYSTEM if expected is not None or running else "", expected)
    assert cmd.argv[:2] == ("sh", "-c") and not cmd.sudo and not cmd.changes  # it only reads
    proc = subprocess.run(cmd.argv, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=10)
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, "", "")
