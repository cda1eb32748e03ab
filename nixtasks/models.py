"""Values that flow between the layers: all frozen, all comparable in tests."""

from __future__ import annotations

import enum
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

SYSTEM_PROFILE = "/nix/var/nix/profiles/system"

Echo = Callable[[str], None]  # where a line for the person goes (stderr, the live view, a test's list)


class Action(enum.Enum):
    BUILD = "build"
    DRY_BUILD = "dry-build"
    SWITCH = "switch"
    BOOT = "boot"
    TEST = "test"
    DRY_ACTIVATE = "dry-activate"

    @property
    def activates(self) -> bool:
        """Runs switch-to-configuration on the host."""
        return self in (Action.SWITCH, Action.BOOT, Action.TEST, Action.DRY_ACTIVATE)

    @property
    def changes_host(self) -> bool:
        """Changes what the host runs or boots: needs an approval."""
        return self in (Action.SWITCH, Action.BOOT, Action.TEST)

    @property
    def sets_profile(self) -> bool:
        return self in (Action.SWITCH, Action.BOOT)

    @property
    def boots_after_checks(self) -> bool:
        """Activated with `test` first, and made the boot entry (profile, boot loader) only once
        the host confirmed and passed its checks: nothing boots a system not confirmed."""
        return self is Action.SWITCH

    @property
    def changes_running_system(self) -> bool:
        return self in (Action.SWITCH, Action.TEST)


@dataclass(frozen=True)
class Target:
    """Where commands run: `None` address means this machine."""

    address: str | None = None
    user: str | None = None
    sudo: bool = False

    @property
    def is_local(self) -> bool:
        return self.address is None

    @property
    def is_ipv6(self) -> bool:
        """An IPv6 literal (the inventory accepts no other address with a colon)."""
        return self.address is not None and ":" in self.address

    @property
    def ssh_destination(self) -> str:
        """What ssh takes: `root@fd00::11` (ssh reads `root@[fd00::11]` as a host named so)."""
        assert self.address is not None
        return f"{self.user}@{self.address}" if self.user else self.address

    @property
    def url_authority(self) -> str:
        """[user@]host as a URL names it, an IPv6 literal in brackets: `root@[fd00::11]`."""
        assert self.address is not None
        host = f"[{self.address}]" if self.is_ipv6 else self.address
        return f"{self.user}@{host}" if self.user else host

    def __str__(self) -> str:
        return "localhost" if self.address is None else self.url_authority


LOCAL = Target()


class SudoPassword(enum.Enum):
    """How sudo on a host gets its password (`sudo_password` in the inventory)."""

    NONE = "none"  # sudo -n: passwordless (NOPASSWD, e.g. `invoke sudoers`), never a hidden prompt
    ASK = "ask"  # asked once per run, shared by every host that asks
    PER_HOST = "per-host"  # asked once per distinct user@host


@dataclass(frozen=True)
class Host:
    """One machine to deploy, resolved from the inventory and the command line."""

    name: str
    config: str  # nixosConfigurations.<config>
    target: Target
    build_host: Target | None = None  # None: build on this machine
    tags: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()
    canary: bool = False  # goes first in a canary deploy (`canary = true`, or the tag "canary")
    sudo_password: SudoPassword = SudoPassword.NONE

    @property
    def is_local(self) -> bool:
        return self.target.is_local


@dataclass(frozen=True)
class Check:
    """A health check: `http` from the deployer, or a `unit` / `command` on the host."""

    kind: str  # "http", "unit" or "command"
    spec: str  # URL template ({host}, {address}), unit name, or shell command
    status: int = 200  # http: the expected status
    contains: str = ""  # http: text the body must contain
    retries: int = 3
    interval: float = 2.0  # seconds between tries
    timeout: float = 5.0  # seconds per try


@dataclass(frozen=True)
class Command:
    """An argv to run somewhere. `changes` marks commands that --dry-run only prints."""

    argv: tuple[str, ...]
    sudo: bool = False
    changes: bool = False
    stdin: str | Secret = ""  # data for the command's standard input (never parsed by a shell)


@dataclass(frozen=True)
class Secret:
    """A password. Its repr and str hide it, so no log line, error or report can show it."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "(hidden)"


@dataclass(frozen=True)
class Cache:
    """[cache]: a binary cache the deployer pushes a release to once, signed, and every host
    substitutes from; a host that cannot gets a direct copy, unless `only`."""

    push: str  # a Nix store URL the deployer writes to: http(s)://, s3://, ssh://, file://
    url: str  # what the hosts substitute from (the same as `push` unless said)
    public_key: str  # name:base64, as the hosts' trusted-public-keys must have it
    secret_key_file: str  # the signing key, on the deployer only (mode 0600)
    only: bool = False  # a host that cannot substitute fails (--cache-only) rather than get a direct copy


@dataclass(frozen=True)
class Delivery:
    """How a host's new closure reached it: the bytes it lacked (NAR sizes) and from where."""

    bytes: int
    source: str  # "cache URL", "deployer", or "build host TARGET"
    note: str = ""  # why not through the cache, when it was meant to be


@dataclass(frozen=True)
class NixFlags:
    """Nix options from the command line, passed on as nixos-rebuild passes them."""

    options: tuple[tuple[str, str], ...] = ()  # --option NAME VALUE
    override_inputs: tuple[tuple[str, str], ...] = ()  # --override-input INPUT REF
    impure: bool = False
    print_build_logs: bool = False  # -L
    max_jobs: str | None = None  # a number, or "auto"
    cores: int | None = None

    def for_build(self) -> tuple[str, ...]:
        """What every Nix command of a build takes, here and on a build host."""
        words = [w for name, value in self.options for w in ("--option", name, value)]
        words += ["--max-jobs", self.max_jobs] if self.max_jobs is not None else []
        words += ["--cores", str(self.cores)] if self.cores is not None else []
        return tuple(words)

    def for_eval(self) -> tuple[str, ...]:
        """What `nix eval` takes besides: an impure evaluation, inputs overridden, build logs
        (of what the evaluation builds)."""
        words = list(self.for_build())
        words += ["--impure"] if self.impure else []
        words += [w for name, ref in self.override_inputs for w in ("--override-input", name, ref)]
        words += ["--print-build-logs"] if self.print_build_logs else []
        return tuple(words)

    def __str__(self) -> str:
        return shlex.join(self.for_eval())


@dataclass(frozen=True)
class GitState:
    revision: str | None  # None: not a git checkout
    dirty: bool = False
    changes: tuple[str, ...] = ()  # `git status --porcelain` lines
    untracked: tuple[str, ...] = ()  # files the flake cannot see

    @property
    def summary(self) -> str:
        if self.revision is None:
            return "not a git repository"
        return f"{self.revision[:12]}{' (dirty)' if self.dirty else ''}"


@dataclass(frozen=True)
class HostPlan:
    """One host in a plan: what it runs and what it boots now, each with its own generation,
    and what it gets."""

    host: Host
    action: Action
    new_system: str
    current_system: str | None  # what runs; None: nothing activated yet, or not asked
    closure_diff: str = ""
    running_generation: int | None = None  # the generation that runs; None: none does (test-activated)
    boot_system: str | None = None  # what the boot profile holds; None: no boot entry yet, or not asked
    boot_generation: int | None = None
    new_generation: int | None = None  # a rollback's: the existing generation it goes to
    delivery: Delivery | None = None  # how its new closure got there (None: nothing was copied)


@dataclass(frozen=True)
class Plan:
    action: Action
    hosts: tuple[HostPlan, ...]
    git: GitState | None  # None: not from the flake (a rollback)
    warnings: tuple[str, ...] = ()
    reason: str = ""
    nix_options: tuple[str, ...] = ()  # given to the evaluation and build: the inventory's, then the command line's


class Outcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    ROLLED_BACK = "rolled back"  # failed, then put back on the system it ran before
    REVERTED = "reverted by the watchdog"  # cut off after activation; the host reverted by itself
    SKIPPED = "skipped"  # not reachable, and --skip-unreachable
    DECLINED = "declined"
    NOT_SELECTED = "not selected"  # left out when a subset of the hosts asked about was chosen
    LOCKED = "locked"  # another deploy holds the host's lock
    NOT_STARTED = "not started"  # a batch before halted the deploy, or Ctrl-C


class Stage(enum.Enum):
    """Where a host is in the pipeline; timed per host in the report."""

    BUILD = "build"
    COPY = "copy"
    LOCK = "lock"
    ACTIVATION = "activation"
    REBOOT = "reboot"
    CONFIRM = "confirm"
    CHECKS = "checks"
    BOOT_ENTRY = "boot-entry"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class HostResult:
    host: str
    action: Action | str  # a NixOS action, or what else was done ("gc", "rollback")
    outcome: Outcome
    new_system: str | None = None  # what the host runs (or boots, for boot) afterwards
    previous_system: str | None = None
    message: str = ""
    previous_generation: int | None = None
    generation: int | None = None
    duration: float = 0.0  # seconds, from lock to unlock
    stages: tuple[tuple[Stage, float], ...] = ()  # seconds per stage
    tried_system: str | None = None  # the system that was activated (None: nothing was), good or bad
    delivery: Delivery | None = None  # how its closure got there (None: nothing was copied)

    @property
    def failed(self) -> bool:
        """Went wrong, whatever was done about it afterwards: never exits 0."""
        return self.outcome in (Outcome.FAILED, Outcome.ROLLED_BACK, Outcome.REVERTED, Outcome.LOCKED)

    @property
    def changed(self) -> bool:
        """This run left the host running (or, for boot, booting) something else than before it:
        its boot generation moved, or (unless boot) its running system did. Not known counts as
        changed."""
        if isinstance(self.action, Action) and not self.action.changes_host:
            return False
        if self.previous_system is None and self.previous_generation is None:
            return self.new_system is not None or self.generation is not None
        if self.generation != self.previous_generation:
            return True
        return self.action is not Action.BOOT and self.new_system != self.previous_system


@dataclass(frozen=True)
class Report:
    action: Action | str
    results: tuple[HostResult, ...] = field(default_factory=tuple)
    interrupted: bool = False
    sent_bytes: int | None = None  # what left the deployer: pushed to the cache and copied directly (NAR sizes)

    @property
    def ok(self) -> bool:
        """Every host that was approved went out fine (those left out of a chosen subset do not count)."""
        return not self.interrupted and all(r.outcome in (Outcome.OK, Outcome.NOT_SELECTED) for r in self.results)

    def failed(self) -> tuple[HostResult, ...]:
        return tuple(r for r in self.results if r.failed)


class Limit(float):
    """Seconds a step may take, carrying the name of the setting that raises it, so that a
    step that runs out can say which limit it hit and how to give it more."""

    setting: str

    def __new__(cls, seconds: float, setting: str) -> Limit:
        limit = super().__new__(cls, seconds)
        limit.setting = setting
        return limit

    def __reduce__(self) -> tuple[type[Limit], tuple[float, str]]:
        return Limit, (float(self), self.setting)


@dataclass(frozen=True)
class BatchSize:
    """One of Ansible's `serial` sizes: a number of hosts, or a percentage of the selection.
    Checked where it is read (the command line, the inventory); never zero, so batches always
    make progress."""

    count: int
    percent: bool = False

    def __post_init__(self) -> None:
        if self.count < 1 or (self.percent and self.count > 100):
            raise ValueError(f"not a batch size: {self}")

    def of(self, total: int) -> int:
        """Hosts in a batch of this size: a percentage is rounded down, but never below one host."""
        return max(1, total * self.count // 100) if self.percent else self.count

    def __str__(self) -> str:
        return f"{self.count}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class Policy:
    """How a fleet goes out: batches, parallelism, and what a failure does."""

    parallel: int = 10  # hosts activated at once within a batch
    batches: tuple[BatchSize, ...] = ()  # Ansible's serial: 1, 5, 20%; the last repeats. Empty: one batch
    pause: float = 0.0  # seconds between batches
    max_fail_percentage: float = 0.0  # of a batch; exceeding it halts, equalling it does not
    rollback_batch_on_failure: bool = False  # roll back a halting batch's healthy hosts too
    checks: bool = True  # run health checks after activation
    rollback: bool = True  # roll a failed host back
    watchdog: bool = True  # arm the connectivity watchdog before activating a remote host
    confirm_timeout: float = 30.0  # seconds the watchdog waits for the confirmation
    lock_timeout: float = 3600.0  # seconds after which a dead deployer's lock expires
    skip_unreachable: bool = False  # report unreachable hosts as skipped instead of stopping
    keep_going: bool = False  # a host whose evaluation or build fails is set aside; the others go on
    # Limits of the long steps, generous for a slow host; a dead connection is noticed much
    # sooner by ssh's keep-alives (see Defaults in inventory.py).
    copy_timeout: float = Limit(3600, "copy_timeout")  # one host's `nix copy`
    activation_timeout: float = Limit(1800, "activation_timeout")  # setting the profile, switch-to-configuration

    def widened(self, usual: int) -> int:
        """Hosts read or worked on at once before the batches: the usual width, or `parallel` when
        the operator asked for more (who activates 100 hosts at once wants them probed and
        copied 100 at once, not 16)."""
        return max(usual, self.parallel)


# How many hosts are talked to at once outside a deploy's batches (whose width is the policy's
# `parallel`): reads of a host (probes, status) are cheap, so more; copies, collections and
# checks that do work on both sides, fewer (a deploy's `--parallel` widens both when larger:
# `Policy.widened`). One place, so that every task agrees.
READS_AT_ONCE = 32
WORK_AT_ONCE = 16


def at_once(count: int, limit: int) -> int:
    """Threads for `count` hosts: no more than `limit`, and at least one (a pool needs one)."""
    return max(1, min(limit, count))
