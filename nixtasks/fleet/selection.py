"""Which hosts an operation goes to, decided before anything changes, the same way for every
host operation (deploy, rollback, gc): refused without a terminal to ask on, every host read,
the unreachable ones named (or skipped with --skip-unreachable, journalled), a sudo that wants a
password stopping the run, and one approval whose no leaves a journalled result per host."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..actions.journal import Journal
from ..errors import HostUnreachable, NixtasksError, Refused
from ..host.facts import Facts, read_facts
from ..host.prompts import HOW_TO_APPROVE, NO, Approval, Prompter
from ..host.runner import Runner
from ..models import READS_AT_ONCE, Action, Echo, Host, HostResult, Outcome, Policy, at_once

S = TypeVar("S")


def refuse_without_terminal(verb: str, asking: Sequence[Host], prompter: Prompter, journal: Journal) -> None:
    """No terminal and no approval: refuse before anything is built or changed."""
    if asking and not prompter.can_ask:
        for host in asking:
            journal.write(host, verb, "refused", on_host=False, message="no terminal and no approval")
        raise Refused(f"{verb} on {', '.join(h.name for h in asking)} needs an approval and there is no "
                      f"terminal to ask on; {HOW_TO_APPROVE}. Nothing was changed")


def read_hosts(hosts: Sequence[Host], runner: Runner, *, sudo_probe: bool = True) -> list[Facts]:
    with ThreadPoolExecutor(max_workers=at_once(len(hosts), READS_AT_ONCE)) as pool:
        return list(pool.map(lambda h: read_facts(h, runner, sudo_probe=sudo_probe), hosts))


def admit(hosts: Sequence[Host], facts: Sequence[Facts], policy: Policy, action: Action | str,
          journal: Journal, echo: Echo) -> tuple[list[tuple[Host, Facts]], tuple[HostResult, ...]]:
    """The hosts that go on, each with its facts, and those skipped as unreachable (journalled
    by the flow once the run goes on to its plan). Raises before anything changes when a host
    cannot be reached (without --skip-unreachable) or its sudo wants a password not given."""
    journal.know(hosts, (f.machine_id for f in facts))
    going, skipped = reachable(hosts, facts, policy, action, echo)
    sudo_ready(going)
    return going, skipped


def reachable(hosts: Sequence[Host], facts: Sequence[Facts], policy: Policy, action: Action | str,
              echo: Echo) -> tuple[list[tuple[Host, Facts]], tuple[HostResult, ...]]:
    """Unreachable hosts stop the run before anything changes, unless they are skipped."""
    down = [(h, f) for h, f in zip(hosts, facts) if not f.reachable]
    if down and not policy.skip_unreachable:
        names = ", ".join(h.name for h, _ in down)
        # The probe's error already says "<host>: cannot reach the host over ssh (<ssh's words>)".
        said = down[0][1].error if len(down) == 1 else f"{names} cannot be reached ({down[0][1].error})"
        raise HostUnreachable(names, (), message=f"{said}; nothing was changed on any host. Bring "
                              f"{'it' if len(down) == 1 else 'them'} back, leave {'it' if len(down) == 1 else 'them'}"
                              " out of the selection, or pass --skip-unreachable")
    for host, fact in down:
        echo(f"warning: {host.name}: unreachable, skipped (--skip-unreachable): {fact.error}")
    skipped = tuple(HostResult(host=h.name, action=action, outcome=Outcome.SKIPPED,
                               message=f"unreachable: {f.error}") for h, f in down)
    if down and len(down) == len(hosts):
        raise NixtasksError(f"no host of the selection can be reached ({', '.join(h.name for h, _ in down)}); "
                            "nothing was changed; check ssh to them with `invoke doctor --all`")
    return [(h, f) for h, f in zip(hosts, facts) if f.reachable], skipped


def sudo_ready(hosts: Sequence[tuple[Host, Facts]]) -> None:
    """A host whose sudo wants a password nixtasks was not given stops the run here, before
    anything is copied, asked or activated (not as a lock it could not take, later)."""
    wanting = [h for h, f in hosts if f.sudo_wants_password]
    if not wanting:
        return
    users = sorted({h.target.user or "USER" for h in wanting})
    user = users[0] if len(users) == 1 else "USER"
    names = ", ".join(f"{h.name} ({h.target})" for h in wanting)
    raise NixtasksError(f"{names}: sudo there wants a password and none was given; nothing was changed on any host. "
                        "Give it with --ask-sudo-password (NIXTASKS_SUDO_PASSWORD_FILE without a terminal), or let "
                        f"nixtasks' commands run without one: invoke sudoers --user {user}")


def ask(items: Sequence[S], asking: Sequence[S], question: str, prompter: Prompter, *,
        host_of: Callable[[S], Host], left_as_is: Callable[[S, Outcome, str], HostResult],
        journal: Callable[[S, HostResult], object], preselect: bool = False) -> tuple[list[S], tuple[HostResult, ...]]:
    """One question for the hosts (of `asking`) that need an approval: the items that go (the
    approved, and those that need none), and the others as results, journalled at once:
    declined after a no, not selected when a subset was chosen."""
    answer = prompter.approve(question, [host_of(i).name for i in asking], preselect=preselect) if asking else NO
    return answered(items, asking, answer, host_of=host_of, left_as_is=left_as_is, journal=journal)


def answered(items: Sequence[S], asking: Sequence[S], answer: Approval, *, host_of: Callable[[S], Host],
             left_as_is: Callable[[S, Outcome, str], HostResult],
             journal: Callable[[S, HostResult], object]) -> tuple[list[S], tuple[HostResult, ...]]:
    """`ask`'s answer applied (apart from the question: a Ctrl-C at it is not one while these
    records are written)."""
    go, left = [], []
    asked = {host_of(i).name for i in asking}  # names, not item equality: linear at a thousand hosts
    for item in items:
        name = host_of(item).name
        if name in asked and name not in answer.hosts:
            left.append(left_as_is(item, *unapproved(answer)))
            journal(item, left[-1])
        else:
            go.append(item)
    return go, tuple(left)


def unapproved(answer: Approval) -> tuple[Outcome, str]:
    """What a host not in the answer is: left out of a chosen subset, or declined."""
    if answer.subset:
        return Outcome.NOT_SELECTED, "not selected; nothing changed"
    return Outcome.DECLINED, "declined; nothing changed"
