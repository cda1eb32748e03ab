"""blue-green: `boot` the new system on the idle group, reboot it, wait until it answers
running the new system, check it, then, after an approval that names the group, run the
inventory's `switch_traffic` on the deployer. A group that does not come back, or fails its
checks, is booted back into its previous generation, and traffic is never switched."""

from __future__ import annotations

from dataclasses import replace

from ..errors import NixtasksError, Refused
from ..fleet import engine, reboot
from ..fleet.pipeline import Change
from ..models import Action, Report


def blue_green(req: engine.DeployRequest, tools: engine.Tools, to: str, switch_traffic: str,
               reboot_timeout: float) -> Report:
    boot = replace(req, action=Action.BOOT)
    prep = engine.prepare(boot, tools)
    names = [c.host.name for c in prep.changes]
    engine.show_plan(prep, tools, reboot=reboot_timeout)
    tools.echo(f"  blue-green: boot the new system on {to} ({', '.join(names)}), reboot, check; then switch "
               f"traffic to {to}" + ("" if switch_traffic else " (no switch_traffic in [blue_green]: by hand)"))
    go, left = engine.approve(prep, prep.changes, tools, question=(
        f"Boot the new system on {to} ({', '.join(names)}) and reboot {'it' if len(names) == 1 else 'them'}?"),
        verb="blue-green")
    if left and not engine.declined(left):  # traffic never moves to a part of a group
        raise Refused(f"blue-green boots {to} as a whole ({', '.join(names)}), not a chosen subset; nothing was "
                      "changed. Run it again and answer yes or no")
    # Kept from here through the checks after the reboot: no other deploy gets in between.
    kept, refused = reboot.keep_for_reboot(go, tools.runner, req.policy, "blue-green")
    for result in refused:
        prep.journal.write_result(next(c.host for c in go if c.host.name == result.host), "blue-green", result)
    handed: list[Change] = []  # to the reboot step, which lets each go after its checks
    try:
        results, interrupted = engine.activate(prep, kept, req.policy, tools, verb="blue-green")
        if interrupted or left or refused or any(r.failed for r in results):
            return engine.finish(engine.report(prep, left + tuple(refused) + results, interrupted, "blue-green"),
                                 tools.echo)
        handed = [c for c, r in zip(kept, results) if r.outcome.value == "ok"]
        rebooted, interrupted = engine.reboot_into_new(prep, handed, req.policy, reboot_timeout, tools,
                                                       "blue-green")
    finally:  # hosts that never got to their reboot (each rebooted one let go after its checks)
        reboot.let_go([c for c in kept if c not in handed], tools.runner, req.policy, "blue-green")
    if interrupted:  # traffic is never switched after Ctrl-C
        return engine.finish(engine.report(prep, rebooted, True, "blue-green"), tools.echo)
    if any(r.failed for r in rebooted) or prep.skipped:
        missing = f" ({', '.join(r.host for r in prep.skipped)} could not be reached)" if prep.skipped else ""
        tools.echo(f"traffic stays where it is: {to} did not come back healthy as a whole{missing}")
        report = engine.report(prep, rebooted, False, "blue-green")
        engine.finish(report, tools.echo)
        raise NixtasksError(f"traffic was not switched to {to}: {', '.join(r.host for r in prep.skipped)} could "
                            "not be reached")  # finish() raised already when a host failed
    if switch_traffic:
        try:
            switch = tools.prompter.confirm(f"{to} ({', '.join(names)}) runs the new system and is healthy. Switch "
                                            f"traffic to {to}?")
        except KeyboardInterrupt:
            switch = False
        if not switch:
            engine.finish(engine.report(prep, rebooted, False, "blue-green"), tools.echo)
            raise Refused(f"traffic was not switched to {to}; {to} runs the new system, the other group the old")
        engine.switch_traffic(switch_traffic, to, names, tools)
        tools.echo(f"traffic switched to {to}; the other group is left for a later run")
    return engine.finish(engine.report(prep, rebooted, False, "blue-green"), tools.echo)
