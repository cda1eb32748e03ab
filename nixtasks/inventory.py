"""Read and validate the inventory (`nixtasks.toml` or `[tool.nixtasks]`). Pure: no effects
besides reading the file and the environment it is given."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import InventoryError, UsageError
from .models import LOCAL, BatchSize, Cache, Check, Host, Limit, Policy, SudoPassword, Target

HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
USER = r"(?:(?P<user>[a-z_][a-z0-9_.-]{0,31})@)?"
# [user@]name; never starting with '-', so it can never become an ssh option.
NAMED_TARGET = re.compile(rf"^{USER}(?P<address>[A-Za-z0-9][A-Za-z0-9._-]*)$")
# [user@]IPv6 literal, bare or in brackets: only hex digits, ':' and '.' (an embedded IPv4),
# then checked by `ipaddress`; no '%' zone id (Nix passes `%25` on to ssh undecoded).
IPV6_TARGET = re.compile(rf"^{USER}(?:\[(?P<bracketed>[0-9A-Fa-f:.]+)\]|(?P<bare>[0-9A-Fa-f:.]+))$")
TARGET_EXAMPLES = '"deploy@web1", "root@[fd00::11]" or "fd00::11"'
LOCALHOST = "localhost"


@dataclass(frozen=True)
class Defaults:
    flake: str = "."
    ssh_user: str | None = None
    sudo: bool | None = None  # None: use sudo when the ssh user is not root
    build_host: str | None = None
    ssh_config: str | None = None
    ssh_options: tuple[str, ...] = ()
    nix_options: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()  # for every host
    allow_secrets: tuple[str, ...] = ()  # files (or dirs/) the secrets guard lets through, relative to the flake
    sudo_password: SudoPassword = SudoPassword.NONE
    # A host whose packets are dropped is unreachable after ssh_connect_timeout seconds, and a
    # connection that dies mid-deploy is noticed after ssh_alive_interval * ssh_alive_count
    # seconds of silence. 0: leave it to ssh and its config.
    ssh_connect_timeout: int = 10
    ssh_alive_interval: int = 10
    ssh_alive_count: int = 3
    # The watchdog's confirmation (a new connection that carries no secret) puts curve25519
    # ahead of a costly post-quantum default; false: the ssh config's order there too.
    ssh_fast_confirmation: bool = True
    builders: tuple[str, ...] = ()  # Nix's remote builders (its `builders` setting), for every build here


@dataclass(frozen=True)
class HostEntry:
    name: str
    target: str | None = None
    tags: tuple[str, ...] = ()
    build_host: str | None = None
    sudo: bool | None = None
    config: str | None = None
    local: bool = False
    checks: tuple[Check, ...] = ()
    canary: bool = False
    sudo_password: SudoPassword | None = None  # None: the defaults'


@dataclass(frozen=True)
class BlueGreen:
    """[blue_green]: the two groups (tags) and how traffic moves between them."""

    groups: tuple[str, ...] = ()  # two tags, e.g. ("blue", "green")
    switch_traffic: str = ""  # run on the deployer: {to} the group, {hosts} its hosts (space-separated)
    reboot_timeout: float = 300.0  # seconds a rebooted host gets to answer again


@dataclass(frozen=True)
class Selection:
    """A recipe's default selection ([recipes.NAME]), used when the command line gives none."""

    hosts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


RECIPE_DEFAULTS = {"update-deploy"}  # the recipes that take a default selection


@dataclass(frozen=True)
class Inventory:
    source: str  # file name shown in messages
    root: Path  # relative paths are relative to this directory
    defaults: Defaults = Defaults()
    hosts: Mapping[str, HostEntry] = field(default_factory=dict)
    policy: Policy = Policy()  # [policy]
    tag_policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # [policy.tags.NAME]: overrides
    blue_green: BlueGreen = BlueGreen()
    recipes: Mapping[str, Selection] = field(default_factory=dict)  # [recipes.NAME]
    cache: Cache | None = None  # [cache]: None, every closure goes straight from the deployer

    def policy_for(self, tags: tuple[str, ...]) -> Policy:
        """[policy], then the overrides of the first selected tag that has some."""
        for tag in tags:
            if tag in self.tag_policies:
                return replace(self.policy, **self.tag_policies[tag])
        return self.policy

    @property
    def flake(self) -> str:
        return resolve_flake(self.defaults.flake, self.root)

    def local_entry(self, hostname: str) -> HostEntry:
        """The entry for this machine: marked `local = true`, else named like it."""
        marked = [h for h in self.hosts.values() if h.local]
        if len(marked) > 1:
            names = ", ".join(h.name for h in marked)
            raise UsageError(f"{self.source}: several hosts have local = true ({names}); keep one")
        if marked:
            return marked[0]
        return replace(self.hosts.get(hostname, HostEntry(name=hostname)), local=True)


def resolve_flake(flake: str, root: Path) -> str:
    """A relative path is relative to the inventory; URLs (`github:...`) stay as they are."""
    if ":" in flake.split("#")[0] and not flake.startswith(("/", ".")):
        return flake
    path, _, fragment = flake.partition("#")
    resolved = str((root / path).resolve())
    return f"{resolved}#{fragment}" if fragment else resolved


# --- reading -----------------------------------------------------------------------------


def find_inventory(explicit: str | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    path = explicit or env.get("NIXTASKS_INVENTORY")
    if path:
        resolved = (cwd / path).resolve()
        if not resolved.is_file():
            raise UsageError(f"{path}: no such inventory file; check --inventory or NIXTASKS_INVENTORY")
        return resolved
    for name in ("nixtasks.toml", "pyproject.toml"):
        if (cwd / name).is_file():
            return cwd / name
    return None


def load(explicit: str | None = None, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Inventory:
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    path = find_inventory(explicit, env, cwd)
    if path is None:
        inv = Inventory(source="(no inventory)", root=cwd)
    else:
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path.name}: not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path.name}: not UTF-8 text; save it as UTF-8") from exc
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc
        if path.name == "pyproject.toml":
            tool = data.get("tool", {})
            data = tool.get("nixtasks", {}) if isinstance(tool, dict) else {}
            expect(isinstance(data, dict), "pyproject.toml", "tool.nixtasks", "expected a table")
            source = "pyproject.toml [tool.nixtasks]"
        else:
            source = path.name
        inv = parse(data, source=source, root=path.parent)
    return replace(inv, defaults=apply_env(inv.defaults, env, inv.source))


def parse(data: Mapping[str, Any], source: str, root: Path) -> Inventory:
    check_keys(data, {"defaults", "hosts", "policy", "blue_green", "recipes", "cache"}, source, "")
    defaults = parse_defaults(data.get("defaults", {}), source)
    hosts_table = data.get("hosts", {})
    expect(isinstance(hosts_table, dict), source, "hosts", "expected a table of [hosts.<name>] sections")
    hosts = {name: parse_host(name, entry, source) for name, entry in hosts_table.items()}
    policy_table = data.get("policy", {})
    expect(isinstance(policy_table, dict), source, "policy", "expected a table")
    tags_table = policy_table.get("tags", {})
    expect(isinstance(tags_table, dict), source, "policy.tags", "expected a table of [policy.tags.<tag>] sections")
    policy = replace(Policy(), **policy_values(policy_table, source, "policy.", allow_tags=True))
    tag_policies = {}
    for tag, table in tags_table.items():
        expect(isinstance(table, dict), source, f"policy.tags.{tag}", "expected a table")
        tag_policies[tag] = policy_values(table, source, f"policy.tags.{tag}.")
    return Inventory(source=source, root=root, defaults=defaults, hosts=hosts, policy=policy,
                     tag_policies=tag_policies, blue_green=parse_blue_green(data.get("blue_green", {}), source),
                     recipes=parse_recipes(data.get("recipes", {}), source),
                     cache=parse_cache(data["cache"], source, root) if "cache" in data else None)


STORE_SCHEMES = ("http", "https", "s3", "ssh", "ssh-ng", "file")
PUBLIC_KEY = re.compile(r"^[-.A-Za-z0-9_]+:[A-Za-z0-9+/]{43}=$")  # name:base64 of 32 bytes


def parse_cache(table: Any, source: str, root: Path) -> Cache:
    """[cache]: push (a Nix store URL), url (what hosts substitute from; push by default),
    public_key, secret_key_file (relative to the inventory's directory), only."""
    expect(isinstance(table, dict), source, "cache", "expected a table")
    check_keys(table, {"push", "url", "public_key", "secret_key_file", "only"}, source, "cache.")
    for key in ("push", "public_key", "secret_key_file"):
        expect(key in table, source, f"cache.{key}", "required in [cache]")
    urls = {}
    for key in ("push", "url"):
        value = table.get(key, table["push"])
        expect(isinstance(value, str) and value.split("://", 1)[0] in STORE_SCHEMES and "://" in value
               and not any(c.isspace() for c in value), source, f"cache.{key}",
               f"expected a Nix store URL: {', '.join(s + '://...' for s in STORE_SCHEMES)}")
        urls[key] = value
    key_text = table["public_key"]
    expect(isinstance(key_text, str) and PUBLIC_KEY.match(key_text) is not None, source, "cache.public_key",
           'expected the cache\'s public key as Nix prints it, "name:base64"')
    secret = Path(string(table["secret_key_file"], source, "cache.secret_key_file", "a file path"))
    only = boolean(table["only"], source, "cache.only") if "only" in table else False
    return Cache(urls["push"], urls["url"], key_text, str(secret if secret.is_absolute() else root / secret), only)


def parse_recipes(table: Any, source: str) -> dict[str, Selection]:
    """[recipes.update-deploy] hosts = [...] and/or tags = [...]: the recipe's default selection."""
    expect(isinstance(table, dict), source, "recipes", "expected a table of [recipes.<recipe>] sections")
    check_keys(table, RECIPE_DEFAULTS, source, "recipes.")
    found = {}
    for recipe, entry in table.items():
        prefix = f"recipes.{recipe}"
        expect(isinstance(entry, dict), source, prefix, "expected a table")
        check_keys(entry, {"hosts", "tags"}, source, f"{prefix}.")
        values = {}
        for key in ("hosts", "tags"):
            if key in entry:
                names = strings(entry[key], source, f"{prefix}.{key}")
                expect(bool(names) and all(HOST_NAME.fullmatch(n) for n in names), source, f"{prefix}.{key}",
                       f'expected a non-empty list of {key} like ["{"web1" if key == "hosts" else "web"}"]')
                values[key] = names
        expect(bool(values), source, prefix, 'expected hosts = [...] or tags = [...] (the default selection)')
        found[recipe] = Selection(**values)
    return found


def parse_blue_green(table: Any, source: str) -> BlueGreen:
    expect(isinstance(table, dict), source, "blue_green", "expected a table")
    check_keys(table, {"groups", "switch_traffic", "reboot_timeout"}, source, "blue_green.")
    values: dict[str, Any] = {}
    if "groups" in table:
        groups = strings(table["groups"], source, "blue_green.groups")
        expect(len(groups) == 2 and groups[0] != groups[1] and all(HOST_NAME.fullmatch(g) for g in groups), source,
               "blue_green.groups", 'expected two different tags like ["blue", "green"]')
        values["groups"] = groups
    if "switch_traffic" in table:
        values["switch_traffic"] = string(table["switch_traffic"], source, "blue_green.switch_traffic",
                                          'a command like "./lb-switch {to} {hosts}"')
    if "reboot_timeout" in table:
        value = table["reboot_timeout"]
        expect(isinstance(value, (int, float)) and not isinstance(value, bool) and 5 <= value <= 3600, source,
               "blue_green.reboot_timeout", "expected seconds from 5 to 3600")
        values["reboot_timeout"] = float(value)
    return BlueGreen(**values)


POLICY_BOOLS = ("rollback_batch_on_failure", "checks", "rollback", "watchdog", "skip_unreachable", "keep_going")
POLICY_SECONDS = {"pause": (0, 86400), "confirm_timeout": (1, 3600), "lock_timeout": (300, 7 * 86400),
                  "copy_timeout": (1, 7 * 86400), "activation_timeout": (1, 7 * 86400)}
LIMITS = ("copy_timeout", "activation_timeout")  # a step that runs out names its setting


def policy_values(table: Mapping[str, Any], source: str, prefix: str, allow_tags: bool = False) -> dict[str, Any]:
    """The policy keys of one table, validated, as Policy field values."""
    allowed = {*POLICY_BOOLS, *POLICY_SECONDS, "parallel", "batch_size", "batches", "max_fail_percentage"}
    check_keys(table, allowed | ({"tags"} if allow_tags else set()), source, prefix)
    values: dict[str, Any] = {}
    for key in POLICY_BOOLS:
        if key in table:
            values[key] = boolean(table[key], source, f"{prefix}{key}")
    for key, (lo, hi) in POLICY_SECONDS.items():
        if key in table:
            value = table[key]
            expect(isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi, source,
                   f"{prefix}{key}", f"expected seconds from {lo} to {hi}")
            values[key] = Limit(value, key) if key in LIMITS else float(value)
    if "parallel" in table:
        value = table["parallel"]
        expect(isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 1000, source,
               f"{prefix}parallel", "expected a whole number of hosts from 1 to 1000")
        values["parallel"] = value
    if "max_fail_percentage" in table:
        value = table["max_fail_percentage"]
        expect(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100, source,
               f"{prefix}max_fail_percentage", "expected a percentage from 0 to 100")
        values["max_fail_percentage"] = float(value)
    expect(not ("batch_size" in table and "batches" in table), source, f"{prefix}batches",
           "give batch_size or batches, not both")
    for key in ("batch_size", "batches"):
        if key in table:
            raw = table[key]
            items = raw if key == "batches" and isinstance(raw, list) else [raw]
            expect(all(isinstance(i, (int, str)) and not isinstance(i, bool) for i in items) and bool(items),
                   source, f"{prefix}{key}", 'expected a number of hosts or a percentage like 5 or "20%"'
                   + (', or a list like [1, 5, "20%"]' if key == "batches" else ""))
            try:
                values["batches"] = parse_sizes(",".join(str(i) for i in items), f"{prefix}{key}",
                                                'batches = [1, 5, "20%"]' if key == "batches" else "batch_size = 5")
            except UsageError as exc:
                raise InventoryError(source, f"{prefix}{key}", str(exc).split(": ", 1)[1]) from exc
    return values


SSH_LIMITS = {"ssh_connect_timeout": (0, 600), "ssh_alive_interval": (0, 600), "ssh_alive_count": (1, 100)}


def parse_defaults(table: Any, source: str) -> Defaults:
    expect(isinstance(table, dict), source, "defaults", "expected a table")
    fields = {"flake", "ssh_user", "sudo", "build_host", "ssh_config", "ssh_options", "nix_options", "checks",
              "allow_secrets", "sudo_password", "ssh_fast_confirmation", "builders", *SSH_LIMITS}
    check_keys(table, fields, source, "defaults.")
    values: dict[str, Any] = {}
    for key in ("flake", "ssh_config"):
        if key in table:
            values[key] = string(table[key], source, f"defaults.{key}", "a non-empty string")
    if "ssh_user" in table:
        values["ssh_user"] = user(table["ssh_user"], source, "defaults.ssh_user")
    if "build_host" in table:
        values["build_host"] = target(table["build_host"], source, "defaults.build_host")
    for key in ("sudo", "ssh_fast_confirmation"):
        if key in table:
            values[key] = boolean(table[key], source, f"defaults.{key}")
    for key in ("ssh_options", "nix_options", "allow_secrets", "builders"):
        if key in table:
            values[key] = strings(table[key], source, f"defaults.{key}")
    expect(all(b.strip() and ";" not in b and "\n" not in b for b in values.get("builders", ())), source,
           "defaults.builders", 'expected one builder per string, like ["ssh://builder x86_64-linux - 4"]')
    if "checks" in table:
        values["checks"] = checks(table["checks"], source, "defaults.checks")
    if "sudo_password" in table:
        values["sudo_password"] = sudo_password(table["sudo_password"], source, "defaults.sudo_password")
    for key, (lo, hi) in SSH_LIMITS.items():
        if key in table:
            value = table[key]
            expect(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi, source,
                   f"defaults.{key}", f"expected whole seconds from {lo} to {hi}"
                   + (" (0: leave it to ssh and its config)" if lo == 0 else ""))
            values[key] = value
    return Defaults(**values)


def sudo_password(value: Any, source: str, key: str) -> SudoPassword:
    choices = [m.value for m in SudoPassword]
    expect(value in choices, source, key, f"expected one of {', '.join(repr(c) for c in choices)} (\"ask\": asked "
           "once per run; \"per-host\": once per user@host; \"none\": sudo -n, passwordless)")
    return SudoPassword(value)


CHECK_KINDS = ("http", "unit", "command")


def checks(value: Any, source: str, key: str) -> tuple[Check, ...]:
    expect(isinstance(value, list), source, key,
           'expected a list of tables like [{ http = "http://{address}/health" }, { unit = "nginx.service" }]')
    return tuple(check(item, source, f"{key}[{i}]") for i, item in enumerate(value))


def check(item: Any, source: str, key: str) -> Check:
    expect(isinstance(item, dict), source, key, "expected a table with one of http, unit or command")
    check_keys(item, {*CHECK_KINDS, "status", "contains", "retries", "interval", "timeout"}, source, f"{key}.")
    kinds = [k for k in CHECK_KINDS if k in item]
    expect(len(kinds) == 1, source, key, "expected exactly one of http, unit or command")
    kind = kinds[0]
    spec = string(item[kind], source, f"{key}.{kind}", f"a non-empty {kind}")
    if kind == "http":
        expect(spec.startswith(("http://", "https://")), source, f"{key}.http",
               'expected a URL starting with http:// or https://, like "http://{address}/health"')
    elif kind == "unit":
        expect(re.fullmatch(r"[A-Za-z0-9@_.:\\-]+", spec) is not None and not spec.startswith("-"), source,
               f"{key}.unit", 'expected a systemd unit name like "nginx.service"')
    values: dict[str, Any] = {"kind": kind, "spec": spec}
    for name, lo, hi in (("status", 100, 599), ("retries", 1, 100)):
        if name in item:
            expect(isinstance(item[name], int) and not isinstance(item[name], bool) and lo <= item[name] <= hi,
                   source, f"{key}.{name}", f"expected a whole number from {lo} to {hi}")
            values[name] = item[name]
    for name in ("interval", "timeout"):
        if name in item:
            expect(isinstance(item[name], (int, float)) and not isinstance(item[name], bool)
                   and 0 < item[name] <= 3600, source, f"{key}.{name}", "expected seconds, more than 0")
            values[name] = float(item[name])
    if "contains" in item:
        values["contains"] = string(item["contains"], source, f"{key}.contains", "a non-empty string")
    return Check(**values)


def parse_host(name: str, entry: Any, source: str) -> HostEntry:
    key = f"hosts.{name}"
    expect(bool(HOST_NAME.fullmatch(name)), source, key,
           "expected a host name of letters, digits, '.', '_' and '-' (at most 63 characters)")
    expect(isinstance(entry, dict), source, key, "expected a table")
    check_keys(entry, {"target", "tags", "build_host", "sudo", "config", "local", "checks", "canary",
                       "sudo_password"}, source, f"{key}.")
    values: dict[str, Any] = {"name": name}
    if "target" in entry:
        values["target"] = target(entry["target"], source, f"{key}.target")
    if "build_host" in entry:
        values["build_host"] = target(entry["build_host"], source, f"{key}.build_host")
    if "sudo" in entry:
        values["sudo"] = boolean(entry["sudo"], source, f"{key}.sudo")
    if "local" in entry:
        values["local"] = boolean(entry["local"], source, f"{key}.local")
    if "canary" in entry:
        values["canary"] = boolean(entry["canary"], source, f"{key}.canary")
    if "sudo_password" in entry:
        values["sudo_password"] = sudo_password(entry["sudo_password"], source, f"{key}.sudo_password")
    if "config" in entry:
        config = string(entry["config"], source, f"{key}.config", "a configuration name")
        expect(bool(HOST_NAME.fullmatch(config)), source, f"{key}.config",
               "expected a nixosConfigurations name of letters, digits, '.', '_' and '-'")
        values["config"] = config
    if "tags" in entry:
        values["tags"] = strings(entry["tags"], source, f"{key}.tags")
    if "checks" in entry:
        values["checks"] = checks(entry["checks"], source, f"{key}.checks")
    return HostEntry(**values)


def apply_env(defaults: Defaults, env: Mapping[str, str], source: str) -> Defaults:
    """NIXTASKS_* variables override the file's defaults."""
    values: dict[str, Any] = {}
    src = "environment"
    if "NIXTASKS_FLAKE" in env:
        values["flake"] = string(env["NIXTASKS_FLAKE"], src, "NIXTASKS_FLAKE", "a flake reference")
    if "NIXTASKS_SSH_USER" in env:
        values["ssh_user"] = user(env["NIXTASKS_SSH_USER"], src, "NIXTASKS_SSH_USER")
    if "NIXTASKS_BUILD_HOST" in env:
        values["build_host"] = target(env["NIXTASKS_BUILD_HOST"], src, "NIXTASKS_BUILD_HOST")
    if "NIXTASKS_SSH_CONFIG" in env:
        values["ssh_config"] = string(env["NIXTASKS_SSH_CONFIG"], src, "NIXTASKS_SSH_CONFIG", "a file path")
    if "NIXTASKS_SUDO" in env:
        values["sudo"] = env_bool(env["NIXTASKS_SUDO"], "NIXTASKS_SUDO")
    for key in ("ssh_options", "nix_options"):
        name = f"NIXTASKS_{key.upper()}"
        if name in env:
            try:
                values[key] = tuple(shlex.split(env[name]))
            except ValueError as exc:
                raise InventoryError("environment", name, f"cannot split it like a shell would: {exc}") from exc
    return replace(defaults, **values)


def env_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise InventoryError("environment", name, f'expected 1 or 0, got "{value}"')


BATCH_SIZE = re.compile(r"^([1-9][0-9]{0,5})(%?)$")


def parse_sizes(spec: str, what: str = "--batches", example: str | None = None) -> tuple[BatchSize, ...]:
    """`1,5,20%` -> (1, 5, 20%): each a number of hosts or a percentage of the selection.
    `example` is a correct value to suggest (default: `WHAT 1,5,20%`)."""
    example = example or f"{what} 1,5,20%"
    items = [s.strip() for s in spec.split(",")]
    if not any(items):
        raise UsageError(f"{what}: give at least one batch size, e.g. {example}")
    if not all(items):
        raise UsageError(f"{what}: {spec!r} has an empty item; give sizes separated by single commas, e.g. {example}")
    for size in items:
        match = BATCH_SIZE.match(size)
        if not match or (match[2] and int(match[1]) > 100):
            raise UsageError(f"{what}: {size!r} is not a batch size; give a number of hosts like 5 or a "
                             f"percentage like 20%, e.g. {example}")
    return tuple(BatchSize(int(size.rstrip("%")), size.endswith("%")) for size in items)


# --- resolving hosts ------------------------------------------------------------------


def split_target(spec: str) -> tuple[str | None, str] | None:
    """`[user@]name`, `[user@]fd00::11` or `[user@][fd00::11]` -> (user, address), the
    address bare; None for anything else."""
    match = NAMED_TARGET.fullmatch(spec)  # fullmatch: `$` alone would let a final newline through
    if match:
        return match["user"], match["address"]
    match = IPV6_TARGET.fullmatch(spec)
    if not match:
        return None
    address = match["bracketed"] or match["bare"]
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return None
    return match["user"], address


def parse_target(spec: str, default_user: str | None, sudo: bool | None) -> Target:
    if spec == LOCALHOST:
        return LOCAL
    parts = split_target(spec)
    if parts is None:
        raise UsageError(f'"{spec}" is not a valid ssh target; expected [user@]host like {TARGET_EXAMPLES}'
                         + ("; an IPv6 zone id (%) is not supported: name the host in your ssh config with "
                            "HostName instead" if "%" in spec else ""))
    ssh_user = parts[0] or default_user
    use_sudo = sudo if sudo is not None else ssh_user != "root"  # no user: ssh's default, maybe not root
    return Target(address=parts[1], user=ssh_user, sudo=use_sudo)


def check_host_name(name: str) -> str:
    if not HOST_NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not a valid host name; use letters, digits, '.', '_' and '-'")
    return name


def resolve_host(inv: Inventory, name: str, *, target_host: str | None = None, build_host: str | None = None,
                 sudo: bool | None = None) -> Host:
    """A named host: from the inventory, or (if the flake defines it) with its name as target."""
    check_host_name(name)
    entry = inv.hosts.get(name, HostEntry(name=name))
    use_sudo = sudo if sudo is not None else entry.sudo if entry.sudo is not None else inv.defaults.sudo
    spec = target_host or (LOCALHOST if entry.local else entry.target or name)
    if spec == LOCALHOST:  # this machine: sudo unless we are root, like `sudo nixos-rebuild`
        host_target = Target(sudo=use_sudo if use_sudo is not None else os.geteuid() != 0)
    else:
        host_target = parse_target(spec, inv.defaults.ssh_user, use_sudo)
    build_spec = build_host or entry.build_host or inv.defaults.build_host
    builder = None if build_spec in (None, LOCALHOST) else parse_target(build_spec, inv.defaults.ssh_user, use_sudo)
    return Host(name=name, config=entry.config or name, target=host_target, build_host=builder, tags=entry.tags,
                checks=inv.defaults.checks + entry.checks, canary=entry.canary or "canary" in entry.tags,
                sudo_password=entry.sudo_password or inv.defaults.sudo_password)


def resolve_local(inv: Inventory, hostname: str, *, build_host: str | None = None,
                  sudo: bool | None = None) -> Host:
    entry = inv.local_entry(hostname)
    local_inv = replace(inv, hosts={**inv.hosts, entry.name: replace(entry, local=True)})
    return resolve_host(local_inv, entry.name, build_host=build_host, sudo=sudo)


# --- validation helpers -----------------------------------------------------------------


def expect(ok: bool, source: str, key: str, expected: str) -> None:
    if not ok:
        raise InventoryError(source, key, expected)


def check_keys(table: Mapping[str, Any], allowed: set[str], source: str, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise InventoryError(source, f"{prefix}{key}",
                                 f"unknown key; expected one of {', '.join(sorted(allowed))}")


def string(value: Any, source: str, key: str, what: str) -> str:
    expect(isinstance(value, str) and value != "", source, key, f"expected {what}")
    return str(value)


def boolean(value: Any, source: str, key: str) -> bool:
    expect(isinstance(value, bool), source, key, "expected true or false")
    return bool(value)


def strings(value: Any, source: str, key: str) -> tuple[str, ...]:
    expect(isinstance(value, list) and all(isinstance(v, str) for v in value), source, key,
           'expected a list of strings like ["a", "b"]')
    return tuple(value)


def user(value: Any, source: str, key: str) -> str:
    expect(isinstance(value, str) and re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", value) is not None,
           source, key, 'expected a user name like "deploy"')
    return str(value)


def target(value: Any, source: str, key: str) -> str:
    expect(isinstance(value, str) and (value == LOCALHOST or split_target(value) is not None), source, key,
           f"expected a string like {TARGET_EXAMPLES}"
           + (" (an IPv6 zone id, %, is not supported: name the host in your ssh config)" if "%" in str(value) else ""))
    return str(value)
