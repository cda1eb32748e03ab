"""Runs `Command` values on this machine or over ssh. The only module that imports `sh`.

Every ssh connection goes through one control master per host (in a private directory,
closed at exit), in batch mode, so ten commands cost one handshake and none can ever
wait on a hidden password prompt.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as NoAnswerYet
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..errors import CommandFailed, HostUnreachable, NixtasksError, UsageError
from ..models import Command, Echo, Secret, Target
from . import commands

SUDO_WANTS_PASSWORD = "sudo: a password is required"
HOW_TO_GIVE = (" (give it with --ask-sudo-password, NIXTASKS_SUDO_PASSWORD_FILE without a terminal, or allow "
               "nixtasks' commands without one: invoke sudoers --user USER)")


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str
    # A batch ended (ssh gave up, say) before this command said how it went: the host may
    # still have run it, and the commands after it.
    cut_off: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


CONTROL_PREFIX = "nixtasks-"
OWNER_FILE = "owner"  # in a run's control directory: "<pid> <start time>" of the nixtasks that made it


def short_control_dir() -> str:
    """A private directory for control sockets (a socket path must stay under ~100 bytes) and
    the run's GC roots, marked with the process that owns it. What a killed run left in the
    same place is removed first."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    if len(base) > 40 or not os.path.isdir(base):
        base = "/tmp"
    remove_leftovers(base)
    path = tempfile.mkdtemp(prefix=CONTROL_PREFIX, dir=base)
    with open(os.path.join(path, OWNER_FILE), "w", encoding="ascii") as owner:
        owner.write(process_identity(os.getpid()))
    return path


def process_identity(pid: int) -> str:
    """`<pid> <start time>`: the start time (in clock ticks since boot, /proc's) tells a
    process apart from a later one that got the same pid; "?" for it where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return f"{pid} {fields[19]}"
    except (OSError, IndexError):
        return f"{pid} ?"


def is_leftover(owner: str) -> bool:
    """Whether the run that wrote `owner` is gone: no process has its pid, or the one that has
    it started at another time. Anything unreadable is not known to be gone."""
    words = owner.split()
    if len(words) != 2 or not words[0].isdigit():
        return False
    pid = int(words[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return words[1] != "?" and process_identity(pid) not in (owner, f"{pid} ?")


def remove_leftovers(base: str) -> None:
    """The control directories (with their GC roots) of this user's nixtasks runs in `base` that
    were killed before they could remove them; never another live run's, nor a directory
    without an owner file (not ours to judge)."""
    try:
        names = [n for n in os.listdir(base) if n.startswith(CONTROL_PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(base, name)
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            with open(os.path.join(path, OWNER_FILE), encoding="ascii", errors="replace") as owner:
                text = owner.read(100)
        except OSError:
            continue
        if is_leftover(text):
            shutil.rmtree(path, ignore_errors=True)


class Runner(Protocol):
    """What the layers above ask of a runner; `ShRunner` runs for real, `RecordingRunner`
    (tests) returns scripted results and records the order of the steps."""

    dry_run: bool
    echo: Echo
    warnings: list[str]
    ssh_options: tuple[str, ...]
    gc_roots: str | None  # where builds here get their garbage-collector roots for the length of a run

    def run(self, cmd: Command, target: Target, *, label: str | None = None, stream: bool = False,
            echo_stdout: bool = True, check: bool = True, timeout: float | None = None,
            fresh: bool = False) -> Result: ...

    def run_all(self, cmds: Sequence[Command], target: Target, *, label: str | None = None, stream: bool = False,
                check: bool = True, timeout: float | None = None, keep_going: bool = False, quiet: int = 0,
                after_quiet: Callable[[], None] | None = None) -> list[Result]:
        """Run `cmds` one after another on `target`, stopping at the first that fails (unless
        `keep_going`): their results, the failing one last. Over ssh they share one round trip.
        With `stream`, the first `quiet` commands are not echoed (they are for nixtasks, as a
        lock's take and the facts are); `after_quiet` is called as soon as they have all
        succeeded, while the rest still runs."""

    def failure(self, cmd: Command, target: Target, where: str, result: Result) -> NixtasksError: ...

    def gc_roots_on(self, target: Target) -> str | None:
        """The directory for the GC roots of builds on `target` for the length of the run, or
        None for none."""

    def expect_fresh(self, target: Target) -> None:
        """A fresh connection to `target` will be wanted soon (a confirmation): resolve its
        ssh settings in the background."""

    def ssh_settings(self, target: Target) -> dict[str, str]:
        """`ssh -G`'s settings for `target` (lowercase keys, the first value of each), asked
        once per run; {} here or when ssh cannot say."""

    def has_sudo_password(self, target: Target) -> bool:
        """Whether sudo on `target` gets a password (--ask-sudo-password) rather than `sudo -n`."""

    def stop_all(self) -> None:
        """Stop every command still running (Ctrl-C ends a journal follow)."""

    def close(self) -> None: ...


class ShRunner:
    """Runs commands for real. `dry_run` prints commands that change something instead.
    With `verbose`, every argv is logged before it runs."""

    def __init__(self, *, ssh_config: str | None = None, ssh_extra: Sequence[str] = (), dry_run: bool = False,
                 echo: Echo | None = None, verbose: bool = False, connect_timeout: int = 0, alive_interval: int = 0,
                 alive_count: int = 0, fast_fresh_kex: bool = True) -> None:
        self.dry_run, self.verbose = dry_run, verbose
        self.echo: Echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        # NIX_SSHOPTS as nixos-rebuild honours it, then the inventory's options.
        try:
            extra = (*shlex.split(os.environ.get("NIX_SSHOPTS", "")), *ssh_extra)
        except ValueError as exc:
            raise UsageError(f"NIX_SSHOPTS cannot be split like a shell would: {exc}") from exc
        spaced = [o for o in (*extra, ssh_config or "") if any(ch.isspace() for ch in o)]
        if spaced:
            raise UsageError(f"ssh option {spaced[0]!r} contains a space, and nix copy splits its ssh options on "
                             "spaces; put that setting in an ssh config file (ssh_config) instead")
        self.control_dir = short_control_dir()
        self.gc_roots: str | None = os.path.join(self.control_dir, "roots")  # removed with the directory
        os.mkdir(self.gc_roots)
        limits = {"connect_timeout": connect_timeout, "alive_interval": alive_interval, "alive_count": alive_count}
        self.ssh_options = commands.ssh_options(self.control_dir, extra, ssh_config, **limits)
        # What a person types to reach a host as nixtasks does: its config and the user's options
        # (the config once, when NIX_SSHOPTS names it too).
        named = ssh_config and ("-F", ssh_config) not in zip(extra, extra[1:])
        self.own_ssh_options = (*(("-F", ssh_config) if named else ()), *extra)
        # A new connection, not the multiplexed one: it proves that the host accepts new
        # connections (the watchdog's confirmation), or gets past a master that died.
        self.fresh_ssh_options = commands.ssh_options(None, (*extra, "-o", "ControlPath=none"), ssh_config, **limits)
        self.fast_fresh_kex = fast_fresh_kex  # see `fresh_options`
        self._resolved: dict[str, Future[str]] = {}  # `ssh -G`'s output by destination
        self._remote_roots: dict[Target, str] = {}  # build hosts' GC root directories, removed at close
        # sudo passwords by target, in memory only: never on an argv, in a log line or a journal.
        self._passwords: dict[str, Secret] = {}
        self.warnings: list[str] = []
        self._used: set[Target] = set()
        self._lock = threading.Lock()
        self._running: dict[int, Any] = {}  # id -> sh's RunningCommand (not hashable)

    # -- public ---------------------------------------------------------------------------

    def run(self, cmd: Command, target: Target, *, label: str | None = None, stream: bool = False,
            echo_stdout: bool = True, check: bool = True, timeout: float | None = None,
            fresh: bool = False) -> Result:
        """Run `cmd` on `target`. With `stream`, each output line is echoed with the label."""
        argv = self.argv(cmd, target, fresh=fresh)
        if cmd.changes and self.dry_run:
            self.echo(f"would run{f' on {label}' if label else ''}: {shlex.join(argv)}")
            return Result(0, "", "")
        result = self._execute(argv, label if stream else None, echo_stdout=echo_stdout, timeout=timeout,
                               stdin=self._stdin(cmd, target))
        result = told_how_to_give(result, cmd.sudo)
        if check and not result.ok:
            raise self.failure(cmd, target, label or str(target), result)
        return result

    def run_all(self, cmds: Sequence[Command], target: Target, *, label: str | None = None, stream: bool = False,
                check: bool = True, timeout: float | None = None, keep_going: bool = False, quiet: int = 0,
                after_quiet: Callable[[], None] | None = None) -> list[Result]:
        """Several commands in one ssh round trip: each keeps its own argv, sudo and quoting
        (so the sudoers snippet matches each), and reports its exit status after a marker
        line only this run knows. Locally, or with --dry-run, they simply run in turn."""
        # With a sudo password, each sudo reads its own line of standard input: one at a time.
        if target.is_local or self.dry_run or len(cmds) < 2 or self.has_sudo_password(target):
            return self._run_in_turn(cmds, target, label=label, stream=stream, check=check, timeout=timeout,
                                     keep_going=keep_going, quiet=quiet, after_quiet=after_quiet)
        marker = f"@@nixtasks-{secrets.token_hex(8)}@@"
        with self._lock:
            self._used.add(target)
        argv = commands.ssh_batch_argv(cmds, target, self.ssh_options, marker, keep_going=keep_going)
        # --verbose shows each command as it would run alone, not the batch's wrapping around them.
        alone = [commands.shown(commands.ssh_argv(c, target, self.ssh_options)) for c in cmds]
        raw = told_how_to_give(self._execute(argv, label if stream else None, timeout=timeout,
                                             stdin="".join(stdin_data(c) for c in cmds), marker=marker, shown=alone,
                                             quiet_steps=quiet, after_quiet=after_quiet),
                               any(c.sudo for c in cmds))
        results = split_batch(raw, marker, len(cmds), keep_going=keep_going)
        failed = next((i for i, r in enumerate(results) if not r.ok), None)
        if check and failed is not None:
            raise self.failure(cmds[failed], target, label or str(target), results[failed])
        return results

    def _run_in_turn(self, cmds: Sequence[Command], target: Target, *, label: str | None, stream: bool,
                     check: bool, timeout: float | None, keep_going: bool, quiet: int = 0,
                     after_quiet: Callable[[], None] | None = None) -> list[Result]:
        results: list[Result] = []
        for index, cmd in enumerate(cmds):
            if index == quiet and after_quiet is not None and all(r.ok for r in results):
                after_quiet()
            results.append(self.run(cmd, target, label=label, stream=stream and index >= quiet, check=check,
                                    timeout=timeout))
            if not results[-1].ok and not keep_going:
                break
        return results

    def argv(self, cmd: Command, target: Target, *, fresh: bool = False) -> tuple[str, ...]:
        password = self.has_sudo_password(target)
        if target.is_local:
            return commands.local_argv(cmd, target, password=password)
        if fresh:
            return commands.ssh_argv(cmd, target, self.fresh_options(target, password=password), password=password)
        with self._lock:
            self._used.add(target)
        return commands.ssh_argv(cmd, target, self.ssh_options, password=password)

    def fresh_options(self, target: Target, *, password: bool) -> tuple[str, ...]:
        """Options of a new connection: curve25519 ahead of a costly post-quantum default
        among the key exchanges the user's config allows for this host
        (`commands.fast_kex_first`), unless a sudo password travels on it or the inventory
        says `ssh_fast_confirmation = false`; then exactly as the config has it. An `ssh -G`
        that has not answered within 2 s is not waited for: the config's order then."""
        if password or not self.fast_fresh_kex or target.is_local:
            return self.fresh_ssh_options
        try:
            resolved = self._resolve(target.ssh_destination).result(timeout=2)
        except NoAnswerYet:
            resolved = ""
        return (*commands.fast_kex_first(resolved), *self.fresh_ssh_options)

    def expect_fresh(self, target: Target) -> None:
        if not target.is_local:
            self._resolve(target.ssh_destination)

    def ssh_settings(self, target: Target) -> dict[str, str]:
        if target.is_local:
            return {}
        try:
            resolved = self._resolve(target.ssh_destination).result(timeout=60)
        except NoAnswerYet:
            return {}
        settings: dict[str, str] = {}
        for line in resolved.splitlines():
            key, _, value = line.partition(" ")
            settings.setdefault(key.lower(), value.strip())
        return settings

    def _resolve(self, destination: str) -> Future[str]:
        """`ssh -G` of `destination` ("" if it fails), once, in a thread of its own: started
        by `expect_fresh` before an activation, the confirmation and the checks need not wait."""
        with self._lock:
            known = self._resolved.get(destination)
            if known is not None:
                return known
            future: Future[str] = Future()
            self._resolved[destination] = future

        def resolve() -> None:
            try:
                result = self._execute(commands.ssh_resolve(destination, self.fresh_ssh_options).argv, None,
                                       timeout=30)
                future.set_result(result.stdout if result.ok else "")
            except Exception:  # then the config's own order and the target's own address
                future.set_result("")

        try:
            threading.Thread(target=resolve, name=f"ssh-G-{destination}", daemon=True).start()
        except RuntimeError:  # no thread to be had: as if ssh could not say
            future.set_result("")
        return future

    def gc_roots_on(self, target: Target) -> str | None:
        """Here, the run's control directory. On a build host, a private directory in its /tmp,
        made at first use and removed at close, so that a garbage collection there cannot take
        a system between its build and its copy (were the removal missed, the host's tmp
        cleaning and its next GC undo it). None when it cannot be made: then a warning, and
        the build goes on without a root."""
        if target.is_local:
            return self.gc_roots
        if self.dry_run:
            return None
        with self._lock:
            known = self._remote_roots.get(target)
        if known is None:
            path = f"/tmp/nixtasks-roots-{secrets.token_hex(8)}"
            made = self.run(commands.make_private_dir(path), target, check=False)
            if not made.ok:
                self.echo(f"warning: {target}: no GC root for the build there "
                          f"({(made.stderr.strip().splitlines() or [f'exit {made.exit_code}'])[-1]}); a garbage "
                          "collection on it during the deploy could remove what it built")
                return None
            with self._lock:
                self._remote_roots[target] = known = path
        return known

    # -- sudo passwords ---------------------------------------------------------------------

    def has_sudo_password(self, target: Target) -> bool:
        return str(target) in self._passwords

    def set_sudo_password(self, target: Target, password: Secret | None) -> None:
        """From now on, sudo on `target` reads `password` from standard input (None: `sudo -n`)."""
        if password is None:
            self._passwords.pop(str(target), None)
        else:
            self._passwords[str(target)] = password

    def _stdin(self, cmd: Command, target: Target) -> str:
        """sudo -S reads one line: the password goes first, the command's own data after it."""
        secret = self._passwords.get(str(target))
        if secret is None or not (cmd.sudo and target.sudo):
            return stdin_data(cmd)
        return secret.value + "\n" + stdin_data(cmd)

    def check_sudo_password(self, target: Target, password: Secret) -> str:
        """Try `password` with sudo on `target`, changing nothing: "ok", "not needed" (the host
        lets the user run nixtasks' commands without one), or what sudo said instead."""
        cmd = commands.sudo_password_probe()
        result = self._execute(self.argv(cmd, target), None, stdin=password.value + "\n", timeout=120)
        if commands.PASSWORD_NOT_NEEDED in result.stdout:
            return "not needed"
        if result.ok and commands.PASSWORD_OK in result.stdout:
            return "ok"
        if result.exit_code == 255 and not target.is_local:
            return str(self.failure(cmd, target, str(target), result))
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        if any("incorrect password" in line or "no password was provided" in line for line in lines):
            return "wrong password"
        return (lines or [f"exit {result.exit_code}"])[-1]

    def close(self) -> None:
        """Remove the build hosts' GC roots, close the control masters and remove their directory."""
        for target, path in self._remote_roots.items():
            self._execute(commands.ssh_argv(commands.remove_tree(path), target, self.ssh_options), None,
                          quiet=True, timeout=30)
        for target in self._used:
            self._execute(commands.close_master(target, self.ssh_options), None, quiet=True)
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def __enter__(self) -> ShRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def nix_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # nix copy splits NIX_SSHOPTS on spaces; __init__ refused options that contain one.
        env["NIX_SSHOPTS"] = " ".join(self.ssh_options)
        return env

    def _execute(self, argv: tuple[str, ...], label: str | None, quiet: bool = False,
                 echo_stdout: bool = True, timeout: float | None = None, stdin: str = "",
                 marker: str | None = None, shown: Sequence[str] = (), quiet_steps: int = 0,
                 after_quiet: Callable[[], None] | None = None) -> Result:
        import sh  # imported here: `invoke --list` must stay fast

        out: list[str] = []
        err: list[str] = []
        ended = [0, 0]  # a batch's commands ended so far, and those of them that failed

        def on_out(line: str) -> None:
            out.append(line)
            if marker is not None and marker in line:  # a batch's status line: not the command's output
                line, _, status = line.partition(marker)
                ended[0] += 1
                ended[1] += status.split()[1:] != ["0"]
                if ended == [quiet_steps, 0] and after_quiet is not None:
                    after_quiet()
                if not line:
                    return
            if label is not None and echo_stdout and ended[0] >= quiet_steps:
                self.echo(f"[{label}] {line.rstrip()}")

        def on_err(line: str) -> None:
            err.append(line)
            if line.startswith("warning:"):
                with self._lock:
                    if line.rstrip() not in self.warnings:
                        self.warnings.append(line.rstrip())
            # A quiet step's error is its result's to tell (the batch ends there), not the screen's.
            if label is not None and not quiet and ended[0] >= quiet_steps:
                self.echo(f"[{label}] {line.rstrip()}")

        if self.verbose and not quiet:
            for line in shown or [commands.shown(argv, self.ssh_options)]:
                self.echo(f"+ {line}")
        try:
            program = sh.Command(argv[0])
        except sh.CommandNotFound as exc:
            raise NixtasksError(f"{argv[0]} is not installed or not on PATH; install it and try again") from exc
        try:
            # Its own process group: Ctrl-C on the terminal reaches nixtasks alone, which decides
            # what stops (a build) and what finishes (an activation under way).
            proc = program(*argv[1:], _env=self.nix_env(), _out=on_out, _err=on_err, _tty_out=False,
                           _ok_code=list(range(256)), _decode_errors="replace", _in=stdin, _bg=True,
                           _bg_exc=False, _new_group=True, _timeout=timeout)
            with self._lock:
                self._running[id(proc)] = proc
            try:
                proc.wait()
            except KeyboardInterrupt:  # only the main thread sees it: stop this command, then go on
                with contextlib.suppress(Exception):
                    proc.signal_group(signal.SIGINT)
                    proc.wait(timeout=5)
                with contextlib.suppress(Exception):
                    proc.kill_group()
                raise
            finally:
                with self._lock:
                    self._running.pop(id(proc), None)
        except sh.TimeoutException:  # like timeout(1), and what it started (nix copy's ssh) goes too
            with contextlib.suppress(Exception):
                proc.kill_group()
            setting = getattr(timeout, "setting", "")
            raise_it = f" (its limit: {setting}; raise it in [policy] for a slow host)" if setting else ""
            return Result(124, "".join(out), "".join(err) + f"\ntimed out after {timeout:g} s{raise_it}")
        except sh.SignalException as exc:  # killed by a signal: report it like a shell would
            return Result(128 + abs(exc.exit_code), "".join(out), "".join(err) + f"killed by signal {-exc.exit_code}")
        return Result(proc.exit_code, "".join(out), "".join(err))

    def failure(self, cmd: Command, target: Target, where: str, result: Result) -> NixtasksError:
        return failure_of(cmd, target, where, result, self.own_ssh_options)

    def stop_all(self) -> None:
        with self._lock:
            running = list(self._running.values())
        for proc in running:
            with contextlib.suppress(Exception):
                proc.signal_group(signal.SIGTERM)


def stdin_data(cmd: Command) -> str:
    """What a command reads on standard input; a Secret (a signing key) is unwrapped only here."""
    return cmd.stdin.value if isinstance(cmd.stdin, Secret) else cmd.stdin


def told_how_to_give(result: Result, sudo: bool) -> Result:
    """sudo's "a password is required", with what to do about it: whoever reads it learns."""
    if sudo and SUDO_WANTS_PASSWORD in result.stderr:
        return replace(result, stderr=result.stderr.replace(SUDO_WANTS_PASSWORD, SUDO_WANTS_PASSWORD + HOW_TO_GIVE))
    return result


def split_batch(raw: Result, marker: str, count: int, *, keep_going: bool = False) -> list[Result]:
    """The results of a batch from its output: each command's stdout ends at its marker line
    (`<marker><index> <status>`). The batch stopped at the first command without a whole
    marker line (ssh failed, or the command killed its shell: then its status is the batch's,
    and it is `cut_off`: the host may still have run it and what followed), or, unless
    `keep_going`, at the first that failed. stderr is not told apart per command: it goes
    with the last command, whose failure it explains."""
    results: list[Result] = []
    rest = raw.stdout
    for index in range(count):
        before, found, after = rest.partition(marker)
        status, newline, rest = after.partition("\n")
        words = status.split()
        if not (found and newline and len(words) == 2 and words[0] == str(index) and words[1].isdigit()):
            results.append(Result(raw.exit_code if raw.exit_code else 1, before, raw.stderr, cut_off=True))
            return results
        code = int(words[1])
        results.append(Result(code, before, ""))
        if code != 0 and not keep_going:
            break
    results[-1] = Result(results[-1].exit_code, results[-1].stdout, raw.stderr)
    return results


SSH_SAYS = ("ssh:", "Timeout, server", "Connection to ", "Connection closed", "Connection reset", "client_loop:",
            "kex_exchange", "Permission denied", "Host key verification failed", "No ED25519 host key",
            "mux_client", "Control socket", "Bad owner", "Could not resolve")


def failure_of(cmd: Command, target: Target, where: str, result: Result,
               ssh_options: Sequence[str] = ()) -> NixtasksError:
    """The error for a failed command: its last `error:` line (or last line), and exit 255
    over ssh as an unreachable host (with the ssh command to try: `ssh_options`, then
    user@address, as nixtasks connects)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    # Not the last line (often "restarting the following units: ..."), but the one that
    # says what failed, as "Activation script snippet 'x' failed (1)" does.
    failing = [line for line in lines if "failed" in line.lower() or "error" in line.lower()]
    detail = (errors or failing or lines or [""])[-1].removeprefix("error: ").strip()
    if result.exit_code == 124 and lines and lines[-1].startswith("timed out after"):
        detail = lines[-1]  # the limit that ran out, not what the command last printed
    if not target.is_local and result.exit_code == 255:
        # ssh's own word (a connect or keep-alive timeout), not the command's last line; a
        # multiplexed session whose master died says nothing itself.
        said = [line.strip() for line in lines if line.startswith(SSH_SAYS)]
        return HostUnreachable(where, cmd.argv, said[-1] if said else "the ssh connection was lost (exit 255)",
                               ssh=shlex.join(("ssh", *ssh_options, target.ssh_destination)))
    return CommandFailed(where, cmd.argv, result.exit_code, detail)
