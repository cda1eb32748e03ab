"""Executes a deploy: git check, one evaluation for all hosts, builds, copy and inspect in
parallel, show the plan, ask, activate host by host, verify."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import CommandFailed, DeployFailed, NixtasksError, Refused
from ..host import commands, gitstate, space
from ..host.generations import generation_of_profile_link
from ..host.prompts import HOW_TO_APPROVE, Prompter
from ..host.runner import Runner
from ..models import LOCAL, Action, Host, HostPlan, HostResult, Outcome, Plan, Report, Target
from .journal import Journal, deployer_journal_path
from .plan import approval_question, needs_approval, render, render_git, render_report

Echo = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    action: Action
    hosts: tuple[Host, ...]
    flake: str
    show_trace: bool = False
    nix_options: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Built:
    path: str  # the system's store path
    at: Target  # where that path exists: this machine or the build host


def execute(req: Request, runner: Runner, prompter: Prompter, echo: Echo, journal_path: Path | None = None) -> Report:
    git = gitstate.read(runner, req.flake)
    for line in render_git(git):
        echo(line)
    journal = Journal(runner, journal_path or deployer_journal_path(), git, req.reason, echo)
    asking = [h for h in req.hosts if needs_approval(req.action, h, git)]
    if asking and not prompter.can_ask:
        refusal = (f"{req.action.value} on {', '.join(h.name for h in asking)} needs an approval and there is no "
                   f"terminal to ask on; {HOW_TO_APPROVE}. Nothing was changed")
        for host in asking:
            journal.write(host, req.action.value, "refused", on_host=False, message="no terminal and no approval")
        raise Refused(refusal)
    built = build(req, runner, echo)
    if not req.action.activates:
        return finish(Report(req.action, tuple(
            HostResult(h.name, req.action, Outcome.OK, built[key(h)].path if built else None) for h in req.hosts
        )), echo)
    with ThreadPoolExecutor(max_workers=min(16, len(req.hosts))) as pool:
        # Every host is checked (reachable, a NixOS closure, room for it) before any copy starts.
        states = list(pool.map(lambda h: inspect_host(h, built[key(h)], req.action, runner), req.hosts))
        host_plans = tuple(pool.map(lambda hs: prepare(hs[0], built[key(hs[0])], req.action, hs[1], runner),
                                    zip(req.hosts, states)))
    plan = Plan(req.action, host_plans, git, tuple(runner.warnings), req.reason)
    echo(render(plan))
    results: list[HostResult] = []
    for hp in host_plans:
        if any(r.outcome is Outcome.FAILED for r in results):
            results.append(unchanged(hp, Outcome.SKIPPED, "not attempted after a failure"))
            journal.write_result(hp.host, req.action.value, results[-1])
            continue
        if needs_approval(req.action, hp.host, git) and not prompter.confirm(approval_question(hp)):
            results.append(unchanged(hp, Outcome.DECLINED, "declined; nothing changed"))
        else:
            results.append(activate(hp, runner))
        if req.action.changes_host:  # at once: an interruption later must not lose this record
            journal.write_result(hp.host, req.action.value, results[-1])
    return finish(Report(req.action, tuple(results)), echo)


def unchanged(hp: HostPlan, outcome: Outcome, message: str) -> HostResult:
    return HostResult(hp.host.name, hp.action, outcome, hp.current_system, hp.current_system, message,
                      hp.current_generation, hp.current_generation)


def finish(report: Report, echo: Echo) -> Report:
    echo(render_report(report))
    failed = report.failed()
    if failed:
        first = failed[0]
        raise DeployFailed(f"{first.host}: {first.message}", report)
    declined = [r.host for r in report.results if r.outcome is Outcome.DECLINED]
    if declined:
        raise Refused(f"not approved for {', '.join(declined)}; nothing was changed there")
    return report


# --- build ----------------------------------------------------------------------------------


def key(host: Host) -> tuple[str, Target]:
    """A system is built once per configuration and build machine."""
    return host.config, host.build_host or LOCAL


def build(req: Request, runner: Runner, echo: Echo) -> dict[tuple[str, Target], Built]:
    """Evaluate every system once, then build each on this machine or its build host."""
    configs = unique(h.config for h in req.hosts)
    cmd = commands.nix_eval_systems(req.flake, configs, show_trace=req.show_trace, nix_options=req.nix_options)
    result = runner.run(cmd, LOCAL, label="eval", stream=True, echo_stdout=False)
    try:
        systems = {c: (v["drv"], v["out"]) for c, v in json.loads(result.stdout).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NixtasksError(f"nix eval printed no system paths I can read: {result.stdout[:200]!r}") from exc
    if req.action is Action.DRY_BUILD:
        drvs = [systems[c][0] for c in configs]
        runner.run(commands.realise(drvs, dry_run=True, nix_options=req.nix_options), LOCAL, label="dry-build",
                   stream=True)
        return {}
    by_builder: dict[Target, list[str]] = {}
    for config, builder in unique(key(h) for h in req.hosts):
        by_builder.setdefault(builder, []).append(config)
    built: dict[tuple[str, Target], Built] = {}
    for builder, names in by_builder.items():
        drvs = [systems[c][0] for c in names]
        if not runner.dry_run:  # --dry-run builds nothing: the evaluated paths are enough
            if not builder.is_local:
                runner.run(commands.nix_copy_derivations(drvs, to=builder), LOCAL)
            where = "build" if builder.is_local else f"build@{builder}"
            runner.run(commands.realise(drvs, nix_options=req.nix_options if builder.is_local else ()), builder,
                       label=where, stream=True, echo_stdout=False)
        built.update({(c, builder): Built(systems[c][1], builder) for c in names})
    if runner.warnings:
        echo(f"Nix warned {len(runner.warnings)} time(s) while building:")
        for warning in runner.warnings:
            echo(f"  {warning}")
    return built


# --- per host --------------------------------------------------------------------------------


def inspect_host(host: Host, built: Built, action: Action, runner: Runner) -> tuple[str | None, int | None]:
    """Before any copy: the closure is a NixOS system, the host answers, and it has room."""
    if not runner.dry_run and not runner.run(commands.is_nixos_system(built.path), built.at, check=False).ok:
        raise NixtasksError(f"{host.name}: {built.path} is not a NixOS system (it has no nixos-version); "
                            "check that the flake output is config.system.build.toplevel")
    state = host_state(host, runner)
    if built.at != host.target and not runner.dry_run:
        check_space(host, built, action, runner)
    return state


def prepare(host: Host, built: Built, action: Action, state: tuple[str | None, int | None],
            runner: Runner) -> HostPlan:
    """Copy the closure to the host and diff it against what the host runs now."""
    current, generation = state
    target = host.target
    if built.at != target:
        runner.run(commands.nix_copy(built.path, to=target, source=built.at), LOCAL, label=host.name)
    diff = ""
    if current and current != built.path and not runner.dry_run:
        diff = runner.run(commands.diff_closures(current, built.path), target, check=False).stdout
    return HostPlan(host, action, built.path, current, diff, generation)


def check_space(host: Host, built: Built, action: Action, runner: Runner) -> None:
    """Refuse before copying when the host lacks room for the part of the closure it does not have."""
    sizes = space.nar_sizes(runner.run(commands.closure_info(built.path), built.at).stdout)
    missing = set(runner.run(commands.missing_paths(sorted(sizes)), host.target, label=host.name).stdout.split())
    needs = [("/nix/store", sum(sizes.get(p, 0) for p in missing))]
    if action.sets_profile:  # the boot loader copies a kernel and initrd the host does not have yet to /boot
        boot_files = runner.run(commands.boot_files(built.path), built.at, check=False).stdout.split()
        needs.append(("/boot", sum(sizes.get(store_root(f), 0) for f in boot_files if store_root(f) in missing)))
    for where, need in needs:
        if need == 0:
            continue
        df = runner.run(commands.free_space(where), host.target, check=False)
        refusal = space.shortage(host.name, where, need, space.available_bytes(df.stdout) if df.ok else None,
                                 f"invoke gc --host {host.name} --keep 3")
        if refusal:
            raise NixtasksError(refusal)


def store_root(path: str) -> str:
    """`/nix/store/abc-linux/bzImage` -> `/nix/store/abc-linux`."""
    return "/".join(path.split("/")[:4])


def host_state(host: Host, runner: Runner) -> tuple[str | None, int | None]:
    """What the host runs now and which generation it boots; an unreachable host is an error."""
    now = runner.run(commands.current_system(), host.target, check=False, label=host.name)
    if now.exit_code == 255 and not host.target.is_local:
        raise runner.failure(commands.current_system(), host.target, host.name, now)
    link = runner.run(commands.profile_link(), host.target, check=False)
    return (now.stdout.strip() or None if now.ok else None,
            generation_of_profile_link(link.stdout) if link.ok else None)


def activate(hp: HostPlan, runner: Runner) -> HostResult:
    host, target, path = hp.host, hp.host.target, hp.new_system

    def fail(message: str) -> HostResult:
        try:
            running, generation = host_state(host, runner)
        except CommandFailed:  # e.g. the activation cut the host off
            running, generation = None, None
        return HostResult(host.name, hp.action, Outcome.FAILED, running, hp.current_system, message,
                          hp.current_generation, generation)

    try:
        systemd = runner.run(commands.has_systemd(), target, check=False).ok
        if hp.action.sets_profile:
            runner.run(commands.set_profile(path), target, label=host.name, stream=True)
        runner.run(commands.switch_to_configuration(path, hp.action, systemd=systemd), target,
                   label=host.name, stream=True)
    except CommandFailed as exc:
        return fail(f"{hp.action.value} failed (exit {exc.returncode}){': ' + exc.detail if exc.detail else ''}")
    if hp.action.changes_running_system and not runner.dry_run:
        now_result = runner.run(commands.current_system(), target, check=False)
        if now_result.exit_code == 255 and not target.is_local:
            return fail(f"{hp.action.value} ran, but the host no longer answers over ssh")
        now = now_result.stdout.strip()
        if now != path:
            return fail(f"after {hp.action.value}, /run/current-system is {now or 'missing'}, not {path}")
    if runner.dry_run:
        return HostResult(host.name, hp.action, Outcome.OK, path, hp.current_system, "", hp.current_generation)
    try:
        generation = host_state(host, runner)[1]
    except CommandFailed as exc:  # the activation may have cut the host off
        return fail(f"{hp.action.value} ran, but the host no longer answers: {exc}")
    return HostResult(host.name, hp.action, Outcome.OK, path, hp.current_system, "", hp.current_generation,
                      generation)


def unique(items: Iterable[T]) -> list[T]:
    return list(dict.fromkeys(items))
