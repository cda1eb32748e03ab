"""A deploy's steps that do not change what a host runs: one evaluation for every host,
builds here or on build hosts, the NixOS and disk-space checks, the copy and the closure
diff. The fleet engine puts them in order and activates."""


from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import CommandFailed, NixtasksError, UsageError
from ..host import commands, space
from ..host.runner import Runner
from ..models import LOCAL, Action, Echo, Host, NixFlags, Target

T = TypeVar("T")


@dataclass(frozen=True)
class BuildRequest:
    action: Action  # build and dry-build stop after this step
    hosts: tuple[Host, ...]
    flake: str
    show_trace: bool = False
    nix_options: tuple[str, ...] = ()  # the inventory's: for this machine's Nix
    nix_flags: NixFlags = NixFlags()  # the command line's: the build host's Nix gets what it can take


@dataclass(frozen=True)
class Built:
    path: str  # the system's store path
    at: Target  # where that path exists: this machine or the build host


# --- build ----------------------------------------------------------------------------------


def key(host: Host) -> tuple[str, Target]:
    """A system is built once per configuration and build machine."""
    return host.config, host.build_host or LOCAL


@dataclass(frozen=True)
class Builds:
    """What one evaluation and build made: each system by configuration and build machine, and
    (--keep-going) the configurations that failed, with Nix's error."""

    built: dict[tuple[str, Target], Built]
    failed: dict[tuple[str, Target], str]  # "its evaluation failed: ..." / "its build failed: ..."


def build(req: BuildRequest, runner: Runner, echo: Echo, *, keep_going: bool = False) -> Builds:
    """Evaluate every system once, then build each on this machine or its build host. With
    `keep_going`, a configuration that fails to evaluate or build is set aside with Nix's error
    and the others go on; the fleet is still evaluated once, and each configuration alone only
    when that one evaluation fails, to find which."""
    check_settings(req.nix_flags, runner)
    configs = unique(h.config for h in req.hosts)
    keys = unique(key(h) for h in req.hosts)
    here = (*req.nix_options, *req.nix_flags.for_build())
    systems, unevaluated = evaluate(req, configs, runner, keep_going=keep_going)
    failed = {k: f"its evaluation failed: {unevaluated[k[0]]}" for k in keys if k[0] in unevaluated}
    if req.action is Action.DRY_BUILD:
        drvs = [systems[c][0] for c in configs if c in systems]
        if drvs:
            runner.run(commands.realise(drvs, dry_run=True, nix_options=here), LOCAL, label="dry-build",
                       stream=True)
        return Builds({}, failed)
    by_builder: dict[Target, list[str]] = {}
    for config, builder in keys:
        if config in systems:
            by_builder.setdefault(builder, []).append(config)
    built: dict[tuple[str, Target], Built] = {}
    for builder, names in by_builder.items():
        drvs = [systems[c][0] for c in names]
        if not runner.dry_run:  # --dry-run builds nothing: the evaluated paths are enough
            if not builder.is_local:
                runner.run(commands.nix_copy_derivations(drvs, to=builder), LOCAL)
            where = "build" if builder.is_local else f"build@{builder}"
            roots = runner.gc_roots_on(builder)  # kept until the run ends: the copy comes later
            root = f"{roots}/{len(built)}" if roots else None
            options = here if builder.is_local else req.nix_flags.for_build()
            cmd = commands.realise(drvs, nix_options=options, add_root=root, keep_going=keep_going)
            result = runner.run(cmd, builder, label=where, stream=True, echo_stdout=False, check=False)
            if not result.ok:
                if not keep_going:
                    raise runner.failure(cmd, builder, where, result)
                broken = unbuilt([systems[c] for c in names], builder, result.stderr, runner)
                failed.update({(c, builder): f"its build failed: {broken[systems[c][1]]}" for c in names
                               if systems[c][1] in broken})
                names = [c for c in names if systems[c][1] not in broken]
        built.update({(c, builder): Built(systems[c][1], builder) for c in names})
    if runner.warnings:
        echo(f"Nix warned {len(runner.warnings)} time(s) while building:")
        for warning in runner.warnings:
            echo(f"  {warning}")
    return Builds(built, failed)


def evaluate(req: BuildRequest, configs: Sequence[str], runner: Runner, *,
             keep_going: bool) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """{config: (drv, out)} from one `nix eval` of them all; with `keep_going`, when that fails,
    each configuration again alone: then also {config: Nix's error} for those that fail."""
    options = (*req.nix_options, *req.nix_flags.for_eval())
    cmd = commands.nix_eval_systems(req.flake, configs, show_trace=req.show_trace, nix_options=options)
    warned = len(runner.warnings)
    result = runner.run(cmd, LOCAL, label="eval", stream=True, echo_stdout=False, check=not keep_going)
    refuse_unmatched_overrides(req.nix_flags, runner.warnings[warned:])
    if result.ok:
        return systems_of(result.stdout), {}
    if len(configs) == 1:
        return {}, {configs[0]: nix_said(runner.failure(cmd, LOCAL, "eval", result))}
    systems: dict[str, tuple[str, str]] = {}
    errors: dict[str, str] = {}
    for config in configs:  # which of them fail: each alone (its error was shown once already)
        alone = commands.nix_eval_systems(req.flake, [config], show_trace=req.show_trace, nix_options=options)
        answer = runner.run(alone, LOCAL, check=False)
        if answer.ok:
            systems.update(systems_of(answer.stdout))
        else:
            errors[config] = nix_said(runner.failure(alone, LOCAL, "eval", answer))
    return systems, errors


def nix_said(error: NixtasksError) -> str:
    """Nix's own error line, without nixtasks' words around it."""
    return error.detail if isinstance(error, CommandFailed) and error.detail else str(error)


def systems_of(stdout: str) -> dict[str, tuple[str, str]]:
    try:
        return {c: (v["drv"], v["out"]) for c, v in json.loads(stdout).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NixtasksError(f"nix eval printed no system paths I can read: {stdout[:200]!r}") from exc


def unbuilt(systems: Sequence[tuple[str, str]], builder: Target, stderr: str, runner: Runner) -> dict[str, str]:
    """After a build with --keep-going failed: {output path: Nix's error about it} for each
    system whose output is not there, its error the line of the build log that names its
    derivation (or what depended on it)."""
    outs = [out for _drv, out in systems]
    missing = set(runner.run(commands.missing_paths(outs), builder, check=False).stdout.split())
    lines = [line.strip() for line in stderr.splitlines() if line.strip().startswith("error:")]
    said = {}
    for drv, out in systems:
        if out in missing:
            named = [line for line in lines if drv in line]
            said[out] = (named or lines or ["see the build log above"])[-1].removeprefix("error: ")
    return said


def result_links(hosts: Sequence[Host], built: Mapping[tuple[str, Target], Built], directory: Path,
                 runner: Runner, echo: Echo) -> None:
    """`./result` (one host) or `./result-NAME` (several) for each built system, a GC root as
    `nixos-rebuild build` leaves one; a system built on a build host is copied here first."""
    for host in hosts:
        made = built[key(host)]
        if not made.at.is_local:
            runner.run(commands.nix_copy(made.path, source=made.at), LOCAL, label=host.name)
        link = directory / ("result" if len(hosts) == 1 else f"result-{host.name}")
        cmd = commands.add_result_link(made.path, str(link))
        made_link = runner.run(cmd, LOCAL, label=host.name, check=False)
        if made_link.ok:
            echo(f"{host.name}: {os.path.relpath(link)} -> {made.path}")
        else:  # the system is built all the same (a read-only checkout, say): say so, and go on
            why = runner.failure(cmd, LOCAL, host.name, made_link)
            echo(f"warning: {host.name}: no {os.path.relpath(link)} link ({why}); the system is built: {made.path}")


def refuse_unmatched_overrides(flags: NixFlags, warnings: Sequence[str]) -> None:
    """Nix only warns about an --override-input that names no input of the flake; nothing was
    built yet, so it stops here rather than deploy what the operator did not ask for."""
    for name, ref in flags.override_inputs:
        if any("--override-input" in w and f"'--override-input {name} " in w and "does not match" in w
               for w in warnings):
            raise UsageError(f"--override-input {name} {ref}: the flake has no input named {name!r}; nothing was "
                             "built. Check the name with `nix flake metadata`")


def check_settings(flags: NixFlags, runner: Runner) -> None:
    """`--option NAME VALUE` with a NAME Nix does not know is only a warning to Nix (and none at
    all to `nix eval` 2.8): refused here, before anything is evaluated or built."""
    if not flags.options:
        return
    result = runner.run(commands.nix_show_config(), LOCAL, check=False)
    try:
        known = set(json.loads(result.stdout))
    except ValueError:
        return  # Nix will say it itself, or not: nothing here to go by
    for name, _value in flags.options:
        if name not in known and name.removeprefix("extra-") not in known:
            raise UsageError(f"--option {name}: Nix has no setting named {name!r}; nothing was built. "
                             "`nix show-config` lists them")


def given(host: Host, path: str, runner: Runner) -> Built:
    """A system staged earlier: `stage` copied it to the host, so it must still be there (it
    need not be on this machine, nor was it, if a build host built it)."""
    if not runner.dry_run and not runner.run(commands.path_is_valid(path), host.target, check=False).ok:
        raise NixtasksError(f"{host.name}: the staged {path} is no longer on the host (garbage-collected?); "
                            "stage the plan again")
    return Built(path, host.target)


# --- per host, before anything changes ------------------------------------------------------


def check_is_nixos(host: Host, built: Built, runner: Runner) -> None:
    """nixos-rebuild refuses a closure that is not a NixOS system; so does nixtasks."""
    if not runner.dry_run and not runner.run(commands.is_nixos_system(built.path), built.at, check=False).ok:
        raise NixtasksError(f"{host.name}: {built.path} is not a NixOS system (it has no nixos-version); "
                            "check that the flake output is config.system.build.toplevel")


def check_space(host: Host, built: Built, action: Action, store_free: int | None, runner: Runner) -> int:
    """Refuse before copying when the host lacks room for the part of the closure it does not
    have. Returns the bytes it lacks (NAR sizes): what the copy will bring it."""
    if built.at == host.target or runner.dry_run:
        return 0
    sizes = space.nar_sizes(runner.run(commands.closure_info(built.path), built.at).stdout)
    missing = set(runner.run(commands.missing_paths(sorted(sizes)), host.target, label=host.name).stdout.split())
    needs = [("/nix/store", sum(sizes.get(p, 0) for p in missing), store_free)]
    if action.sets_profile:  # the boot loader copies a kernel and initrd the host does not have yet to /boot
        boot_files = runner.run(commands.boot_files(built.path), built.at, check=False).stdout.split()
        needs.append(("/boot", sum(sizes.get(store_root(f), 0) for f in boot_files if store_root(f) in missing),
                      None))
    for where, need, free in needs:
        if need == 0:
            continue
        if free is None:
            df = runner.run(commands.free_space(where), host.target, check=False)
            free = space.available_bytes(df.stdout) if df.ok else None
        refusal = space.shortage(host.name, where, need, free, f"invoke gc --host {host.name} --keep 3")
        if refusal:
            raise NixtasksError(refusal)
    return needs[0][1]


def store_root(path: str) -> str:
    """`/nix/store/abc-linux/bzImage` -> `/nix/store/abc-linux`."""
    return "/".join(path.split("/")[:4])


def copy(host: Host, built: Built, runner: Runner, timeout: float | None = None) -> None:
    if built.at != host.target:
        runner.run(commands.nix_copy(built.path, to=host.target, source=built.at), LOCAL, label=host.name,
                   timeout=timeout)


def diff_here(host: Host, current: str, new: Built, runner: Runner) -> str | None:
    """`nix store diff-closures` here, when this machine has both closures (it built what the
    host runs, as a deployer usually did): that saves a round trip, and needs no copy, so it
    can run beside it. None: it must run on the host (`diff_on_host`), once copied."""
    if not current or current == new.path or runner.dry_run:
        return ""
    if new.at.is_local:
        here = runner.run(commands.diff_closures(current, new.path, substitute=False), LOCAL, check=False)
        if here.ok or host.is_local:
            return here.stdout
    return None


def diff_on_host(host: Host, current: str, new: Built, runner: Runner) -> str:
    """The diff on the host, which has both closures after the copy."""
    return runner.run(commands.diff_closures(current, new.path), host.target, check=False).stdout


def closure_diff(host: Host, current: str, new: Built, runner: Runner) -> str:
    """The closure diff here if this machine can make it, else on the host."""
    here = diff_here(host, current, new, runner)
    return here if here is not None else diff_on_host(host, current, new, runner)


def unique(items: Iterable[T]) -> list[T]:
    return list(dict.fromkeys(items))
