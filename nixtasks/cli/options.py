"""The command line's options, checked once at the edge: a bad value is one `error:` line
before anything runs."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .. import inventory
from ..errors import UsageError
from ..models import BatchSize, Cache, Limit, NixFlags, Policy


@dataclass(frozen=True)
class Options:
    """What every action task accepts."""

    hosts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    all_hosts: bool = False  # every host in the inventory
    target_host: str | None = None
    build_host: str | None = None
    sudo: bool | None = None
    show_trace: bool = False
    dry_run: bool = False
    yes: bool = False
    reason: str = ""
    inventory: str | None = None
    verbose: bool = False
    json: bool = False
    full_diff: bool = False
    allow_secrets: tuple[str, ...] = ()
    ask_sudo_password: bool = False  # also NIXTASKS_ASK_SUDO_PASSWORD=1
    no_link: bool = False  # build: no ./result link
    nix: NixFlags = NixFlags()  # --option, --override-input, --impure, -L, --max-jobs, --cores
    cache: bool | None = None  # --cache / --no-cache; None: through the inventory's [cache] if it has one
    cache_only: bool = False
    builders: tuple[str, ...] = ()  # --builders: Nix's remote builders, instead of the inventory's
    policy: PolicyFlags = field(default_factory=lambda: PolicyFlags())


@dataclass(frozen=True)
class PolicyFlags:
    """The fleet options given on the command line; None: the inventory's [policy] decides."""

    parallel: int | None = None
    batches: tuple[BatchSize, ...] | None = None  # --batch-size (one size) or --batches, parsed
    pause: float | None = None
    max_fail_percentage: float | None = None
    rollback_batch_on_failure: bool | None = None
    checks: bool | None = None
    rollback: bool | None = None
    watchdog: bool | None = None
    confirm_timeout: float | None = None
    skip_unreachable: bool | None = None
    keep_going: bool | None = None
    copy_timeout: float | None = None
    activation_timeout: float | None = None


BATCH_SIZE_EXAMPLE = "--batch-size 5 or --batch-size 20%"


ONE_BATCH_SIZE = "--batch-size: give one size like 5 or 20%; for several, use --batches 1,5,20%"


def number(value: str | None, flag: str, lowest: float = 0, highest: float | None = None, *,
           whole: bool = True) -> Any:
    """A number from the command line, or one clear error naming the option."""
    if value is None:
        return None
    try:
        parsed: float = int(value) if whole else float(value)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        raise UsageError(f"{flag}: {value!r} is not {kind}; e.g. {flag} {int(lowest) or 5}") from None
    if not math.isfinite(parsed):
        raise UsageError(f"{flag}: {value} is not a finite number; give one like {flag} {max(int(lowest), 5)}")
    if parsed < lowest:
        raise UsageError(f"{flag}: {value} is too small; give at least {lowest:g}")
    if highest is not None and parsed > highest:
        raise UsageError(f"{flag}: {value} is too large; give at most {highest:g}")
    return parsed


WEEK = 7 * 86400


def policy_flags(*, parallel: str | None = None, batch_size: str | None = None, batches: str | None = None,
                 pause: str | None = None, max_fail_percentage: str | None = None,
                 rollback_batch_on_failure: bool = False, no_checks: bool = False, no_rollback: bool = False,
                 no_watchdog: bool = False, confirm_timeout: str | None = None,
                 skip_unreachable: bool = False, keep_going: bool = False, copy_timeout: str | None = None,
                 activation_timeout: str | None = None) -> PolicyFlags:
    """The command line's fleet options, checked and parsed here, once; an option not given
    stays None."""
    if batch_size is not None and batches is not None:
        raise UsageError("give --batch-size or --batches, not both")
    sizes = None
    if batch_size is not None:
        sizes = inventory.parse_sizes(batch_size, "--batch-size", BATCH_SIZE_EXAMPLE)
        if len(sizes) != 1:
            raise UsageError(ONE_BATCH_SIZE)
    if batches is not None:
        sizes = inventory.parse_sizes(batches, "--batches")
    return PolicyFlags(parallel=number(parallel, "--parallel", 1), batches=sizes,
                       pause=number(pause, "--pause", 0, whole=False),
                       max_fail_percentage=number(max_fail_percentage, "--max-fail-percentage", 0, 100, whole=False),
                       rollback_batch_on_failure=True if rollback_batch_on_failure else None,
                       checks=False if no_checks else None, rollback=False if no_rollback else None,
                       watchdog=False if no_watchdog else None,
                       confirm_timeout=number(confirm_timeout, "--confirm-timeout", 1, 3600, whole=False),
                       skip_unreachable=True if skip_unreachable else None,
                       keep_going=True if keep_going else None,
                       copy_timeout=limit(copy_timeout, "copy_timeout"),
                       activation_timeout=limit(activation_timeout, "activation_timeout"))


NIX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def name_and_value(given: str, flag: str, what: str, example: str) -> tuple[str, str]:
    """`NAME=VALUE` or `NAME VALUE` (invoke's flags take one value each, nix's --option two)."""
    name, sep, value = given.partition("=")
    if not (sep and NIX_NAME.fullmatch(name)):
        name, _, value = given.strip().partition(" ")
        value = value.strip()
    if not NIX_NAME.fullmatch(name):
        raise UsageError(f"{flag} {given!r}: give {what}=VALUE (or '{what} VALUE'), e.g. {flag} {example}")
    return name, value


def nix_flags(*, impure: bool = False, option: Any = None, override_input: Any = None,
              print_build_logs: bool = False, max_jobs: str | None = None, cores: str | None = None) -> NixFlags:
    """The command line's Nix options, checked; Nix still has the last word on their values."""
    if max_jobs is not None and max_jobs != "auto":
        max_jobs = str(number(max_jobs, "--max-jobs", 0))
    overrides = tuple(name_and_value(o, "--override-input", "INPUT", "nixpkgs=path:/src/nixpkgs")
                      for o in override_input or ())
    if any(not ref for _name, ref in overrides):
        raise UsageError("--override-input: give the input and a flake reference, e.g. "
                         "--override-input nixpkgs=path:/src/nixpkgs")
    return NixFlags(options=tuple(name_and_value(o, "--option", "NAME", "substituters=''") for o in option or ()),
                    override_inputs=overrides, impure=impure, print_build_logs=print_build_logs,
                    max_jobs=max_jobs, cores=number(cores, "--cores", 0))


def limit(value: str | None, setting: str) -> Limit | None:
    """A step's time limit from the command line (--copy-timeout for copy_timeout)."""
    seconds = number(value, f"--{setting.replace('_', '-')}", 1, WEEK, whole=False)
    return None if seconds is None else Limit(seconds, setting)


def policy(inv: inventory.Inventory, opts: Options) -> Policy:
    """[policy], then [policy.tags.TAG] of the selected tag, then the command line (checked
    by `policy_flags`)."""
    given = {f.name: getattr(opts.policy, f.name) for f in fields(opts.policy)
             if getattr(opts.policy, f.name) is not None}  # not asdict: it would take BatchSizes apart
    return replace(inv.policy_for(split_hosts(opts.tags)), **given)


def chosen_cache(inv: inventory.Inventory, opts: Options) -> Cache | None:
    """The cache a release goes through: the inventory's unless --no-cache; --cache and
    --cache-only need one."""
    if opts.cache is False:
        return None
    if inv.cache is None:
        if opts.cache:
            flag = "--cache-only" if opts.cache_only else "--cache"
            raise UsageError(f"{flag}: {inv.source} has no [cache] table; add one (push, public_key, "
                             "secret_key_file: docs/cache.md), or leave out the option")
        return None
    return replace(inv.cache, only=True) if opts.cache_only else inv.cache


def builders_option(inv: inventory.Inventory, opts: Options) -> tuple[str, ...]:
    """Nix's remote builders (--builders, else the inventory's) as the setting Nix reads."""
    builders = opts.builders or inv.defaults.builders
    for builder in builders:
        if not builder.strip() or ";" in builder or "\n" in builder:
            raise UsageError(f"--builders {builder!r}: give one builder per option, like --builders "
                             "'ssh://builder x86_64-linux - 4'")
    return ("--option", "builders", " ; ".join(builders)) if builders else ()


def split_hosts(values: tuple[str, ...]) -> tuple[str, ...]:
    """--host a --host b,c -> (a, b, c)."""
    names = [n.strip() for v in values for n in v.split(",")]
    return tuple(dict.fromkeys(n for n in names if n))


def check_names(values: tuple[str, ...], flag: str, known: str) -> None:
    """Each --host/--tag value names something: an empty one (`--host "$HOSTS"` with HOSTS
    unset) must never fall back to this machine."""
    for value in values:
        items = [n.strip() for n in value.split(",")]
        if not any(items):
            raise UsageError(f"{flag} {value!r} names no {flag[2:]}; give {flag} NAME ({known}), or, to act on "
                             f"this machine, leave out {flag}")
        if not all(items):
            raise UsageError(f"{flag} {value!r} has an empty name in its list; separate names by single commas, "
                             f"like {flag} a,b ({known})")


def some(names: list[str], shown: int = 8) -> str:
    """A list for a one-line message: its first names, and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more if names else "none"


def check_selection(inv: inventory.Inventory, opts: Options) -> None:
    """Refuse a selection that is empty, or two that contradict each other."""
    tags = sorted({t for e in inv.hosts.values() for t in e.tags})
    check_names(opts.hosts, "--host", f"hosts in {inv.source}: {some(list(inv.hosts))}")
    check_names(opts.tags, "--tag", f"tags in {inv.source}: {some(tags)}")
    if opts.all_hosts and (opts.hosts or opts.tags):
        given = ", ".join(f"{flag} {', '.join(values)}" for flag, values in (("--host", opts.hosts),
                                                                                 ("--tag", opts.tags)) if values)
        raise UsageError(f"--all and {given} both select hosts (--all: every host in {inv.source}); give one of them")
    if opts.target_host and (opts.tags or opts.all_hosts):
        raise UsageError(f"--target-host {opts.target_host} deploys one configuration to one machine; give it with a "
                         "single --host NAME, not with --tag or --all")


def needs_selection(opts: Options, recipe: str) -> None:
    if not (opts.hosts or opts.tags or opts.all_hosts):
        raise UsageError(f"{recipe} needs hosts: --host NAME, --tag TAG or --all (make {recipe} HOSTS=... or TAG=...)")


def check_reason(reason: str) -> str:
    if any(ord(ch) < 32 for ch in reason):
        raise UsageError("--reason: control characters such as newlines are not allowed; give one line")
    if len(reason) > 500:
        raise UsageError("--reason: at most 500 characters")
    return reason


def reason(opts: Options) -> str:
    return check_reason(opts.reason or os.environ.get("NIXTASKS_REASON", ""))


def approved(opts: Options) -> bool:
    return opts.yes or inventory.env_bool(os.environ.get("NIXTASKS_YES", "0"), "NIXTASKS_YES")


