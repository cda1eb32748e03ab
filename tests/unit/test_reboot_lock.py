"""The deploy lock across a reboot: the commands (argv, sudo, the sudoers snippet), what the
lock holder says, and the order of one host's steps through blue-green's reboot with a
recording runner. And emergency's words for a host left on its tested system."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from nixtasks.actions import access
from nixtasks.fleet import lock, reboot
from nixtasks.fleet.pipeline import Change, Context
from nixtasks.fleet.progress import PlainProgress
from nixtasks.host import commands
from nixtasks.host.facts import parse_facts
from nixtasks.host.runner import Result
from nixtasks.models import Action, Command, Host, HostResult, Outcome, Policy, Target
from nixtasks.recipes import emergency
from tests.recording import OK, RecordingRunner

OLD, NEW = "/nix/store/" + "a" * 32 + "-nixos-system-web1-1.0", "/nix/store/" + "b" * 32 + "-nixos-system-web1-1.1"
WEB1 = Host("web1", "web1", Target("web1", "root"))
OWNER = "who=alice@laptop,action=blue-green,pid=4711,since=2026-12-03T18:00:00Z"


def test_take_lock_is_the_unit_then_the_hold_check_in_one_sudo_script():
    cmd = commands.take_lock(OWNER, 3600.7)
    assert cmd.argv == ("sh", "-c", commands.TAKE_SCRIPT, "nixtasks-lock", OWNER, "3600") and cmd.sudo and cmd.changes
    script = commands.TAKE_SCRIPT
    assert script.startswith("systemd-run --unit=nixtasks-lock.service --quiet --collect --property=RuntimeMaxSec=$2 ")
    # the hold is read after the unit is ours: a hold written before the unit was free is seen
    assert script.index("systemd-run") < script.index(f"<{commands.LOCK_HOLD}") < script.index("systemctl stop")
    assert script.endswith(f"exit {commands.LOCK_HELD}")


def test_the_hold_is_written_by_the_units_owner_only_and_renamed_into_place():
    cmd = commands.hold_lock(OWNER, 900)
    assert cmd.argv == ("sh", "-c", commands.HOLD_SCRIPT, "nixtasks-hold", OWNER, "900") and cmd.sudo
    script = commands.HOLD_SCRIPT
    assert 'mine "$1"||exit 3;' in script
    assert script.endswith(f"mv -f {commands.LOCK_HOLD}.new {commands.LOCK_HOLD}")


def test_releasing_the_hold_unlock_and_the_holder():
    assert commands.release_hold(OWNER).argv == ("sh", "-c", commands.UNHOLD_SCRIPT, "nixtasks-unhold", OWNER)
    assert f"rm -f {commands.LOCK_HOLD}" in commands.UNHOLD_SCRIPT and '[ "$o" != "$1" ]' in commands.UNHOLD_SCRIPT
    unlock = commands.release_lock()  # invoke unlock: the unit and any hold, whoever's
    assert unlock.argv == ("sh", "-c", commands.UNLOCK_SCRIPT) and f"rm -f {commands.LOCK_HOLD}" in unlock.argv[2]
    mine = commands.release_lock(OWNER)  # a deploy's own release leaves a hold alone
    assert commands.LOCK_HOLD not in mine.argv[2]
    holder = commands.lock_holder()
    assert holder.argv == ("sh", "-c", commands.HOLDER_SCRIPT) and not holder.sudo


def test_the_sudoers_snippet_allows_the_hold_commands_with_any_owner_and_seconds():
    text = access.sudoers("deploy")
    for script in (commands.TAKE_SCRIPT, commands.HOLD_SCRIPT, commands.UNHOLD_SCRIPT, commands.UNLOCK_SCRIPT):
        assert access.regex_word(script) in text
    owner = access.PATTERNS[access.OWNER]
    assert f"nixtasks-lock {owner} [0-9]+$" in text and f"nixtasks-hold {owner} [0-9]+$" in text
    assert f"nixtasks-unhold {owner}$" in text


@pytest.mark.parametrize("answer, holder", [
    ("", ""),
    (f"nixtasks-lock.service loaded active running nixtasks-lock:{OWNER}\n", OWNER),
    (f"nixtasks-lock.service loaded deactivating stop-sigterm nixtasks-lock:{OWNER}\n", ""),
    (f"hold 1796320800 {OWNER}\n", f"{OWNER}; kept across a reboot until 2026-12-03 18:00:00 UTC"),
    # a refused taker's unit on its way out: the hold names who keeps the host
    (f"nixtasks-lock.service loaded active running nixtasks-lock:who=bob@x\nhold 1796320800 {OWNER}\n",
     f"{OWNER}; kept across a reboot until 2026-12-03 18:00:00 UTC"),
])
def test_the_lock_holder(answer, holder):
    assert commands.parse_lock_holder(answer) == holder


def test_facts_name_the_hold_first():
    text = (f"running\t{OLD}\nsystemd\tyes\nlock\tnixtasks-lock.service loaded active running nixtasks-lock:who=b\n"
            f"hold\t1796320800 {OWNER}\n")
    assert parse_facts(text).lock_holder.startswith(OWNER + "; kept across a reboot until")
    assert parse_facts(text.replace(f"hold\t1796320800 {OWNER}\n", "")).lock_holder == "who=b"


def test_the_owner_is_the_same_for_every_take_of_a_runs_action():
    assert lock.owner("blue-green") == lock.owner("blue-green") != lock.owner("switch")


# --- one host through blue-green's reboot ---------------------------------------------------------


@dataclass
class RebootingHost:
    """A host that reboots when told (a new boot id), whose lock unit a reboot ends."""

    boot: int = 1
    reboots: bool = True
    held_by_another: str = ""  # another deploy's hold: our takes are refused (exit LOCK_HELD)
    retake_refusals: int = 0  # takes after the reboot refused as another's unit (on its way out)
    unreachable_in_boot: int = 0  # in this boot (1: before the reboot), ssh fails as the lock is taken
    locked: bool = False
    steps: list[str] = field(default_factory=list)

    def __call__(self, step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "lock" and self.boot == self.unreachable_in_boot:
            return Result(255, "", "ssh: connect to host web1 port 22: Connection refused")
        if step == "lock":
            if self.held_by_another:
                return Result(commands.LOCK_HELD, "", f"1796320800 {self.held_by_another}\n")
            if self.boot > 1 and self.retake_refusals:
                self.retake_refusals -= 1
                return Result(1, "", "Unit nixtasks-lock.service was already loaded")
            self.locked = True
        if step == "lock-holder":
            return Result(0, "nixtasks-lock.service loaded active running nixtasks-lock:who=bob@x\n", "")
        if step == "systemctl reboot" and self.reboots:
            self.boot += 1
            self.locked = False
        if step == "cat /proc/sys/kernel/random/boot_id":
            return Result(0, f"boot-{self.boot}\n", "")
        if step == "facts":
            return Result(0, f"running\t{NEW}\nprofile\tsystem-2-link\nprofile-path\t{NEW}\nsystemd\tyes\n"
                          "state\trunning\n", "")
        return OK


def reboot_one(fake: RebootingHost, timeout: float = 5) -> tuple[HostResult, RecordingRunner]:
    runner = RecordingRunner(fake)
    before = parse_facts(f"running\t{OLD}\nprofile\tsystem-2-link\nprofile-path\t{NEW}\nsystemd\tyes\n")
    ctx = Context(runner, Policy(checks=False), PlainProgress(runner.echo), "blue-green")
    return reboot.reboot_one(Change(WEB1, Action.BOOT, NEW, before), ctx, timeout), runner


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(reboot, "POLL", 0.01)
    monkeypatch.setattr(lock.time, "sleep", lambda seconds: None)


BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


def test_the_hold_is_renewed_before_the_reboot_the_lock_retaken_after_and_both_let_go():
    result, runner = reboot_one(RebootingHost())
    assert result.outcome is Outcome.OK, result.message
    assert runner.steps() == ["lock", "hold", BOOT_ID, "systemctl reboot", f"{BOOT_ID}*", "facts*", "lock",
                              "unhold", "unlock"]
    assert len({c.trip for c in runner.calls if c.step in ("unhold", "unlock")}) == 1  # one round trip


def test_a_refusal_after_the_reboot_is_tried_again_while_our_hold_keeps_the_host():
    result, runner = reboot_one(RebootingHost(retake_refusals=2))
    assert result.outcome is Outcome.OK, result.message
    assert runner.steps().count("lock") == 4


def test_a_reboot_that_never_happens_releases_the_lock_and_the_hold():
    result, runner = reboot_one(RebootingHost(reboots=False), timeout=0.05)
    assert result.outcome is Outcome.FAILED and "did not answer with a new boot id" in result.message
    assert runner.steps()[-2:] == ["unhold", "unlock"]


def test_another_deploys_hold_refuses_the_reboot_and_names_it():
    result, runner = reboot_one(RebootingHost(held_by_another=OWNER.replace("alice", "bob")))
    assert result.outcome is Outcome.LOCKED
    assert result.message.startswith("locked by another deploy (who=bob@laptop,action=blue-green")
    assert "not rebooted" in result.message and "systemctl reboot" not in runner.steps()


@pytest.mark.parametrize("boot", [1, 2], ids=["before-the-reboot", "after-it"])
def test_a_host_ssh_cannot_reach_is_failed_with_the_ssh_error_not_locked(boot):
    """Connection refused when the lock is taken (renewed before the reboot, or taken again after
    it) is no other deploy's lock: failed, with ssh's words, and no advice to unlock."""
    result, runner = reboot_one(RebootingHost(unreachable_in_boot=boot))
    assert result.outcome is Outcome.FAILED, result.message
    assert "Connection refused" in result.message and "locked by another" not in result.message
    assert "invoke unlock" not in result.message
    assert result.message.endswith("not rebooted (it boots the new system at its next boot)" if boot == 1
                                   else "before its checks ran")
    assert ("systemctl reboot" in runner.steps()) == (boot == 2)


def test_the_hold_is_renewed_under_our_own_unit_and_hold_with_our_owner_text():
    """After the checks (the unit taken again, the hold still there), one more reboot: the take
    finds both ours, and the hold is renewed with the owner text itself, not the holder's
    words for it ("...; kept across a reboot until ..."), which the host would refuse."""
    mine = lock.owner("blue-green")
    renewed: list[str] = []

    def host(step: str, cmd: Command, target: Target, fresh: bool) -> Result:
        if step == "lock":
            return Result(1, "", "Unit nixtasks-lock.service was already loaded")
        if step == "lock-holder":
            return Result(0, f"nixtasks-lock.service loaded active running nixtasks-lock:{mine}\n"
                             f"hold 1796320800 {mine}\n", "")
        if step == "hold":
            renewed.append(cmd.argv[-2])
            return OK if cmd.argv[-2] == mine else Result(3, "", "")
        return OK

    assert lock.renew_hold(WEB1, "blue-green", 900, RecordingRunner(host)) is None
    assert renewed == [mine]


def test_keep_for_reboot_reports_a_host_ssh_cannot_reach_as_failed():
    before = parse_facts(f"running\t{OLD}\nsystemd\tyes\n")
    changes = [Change(WEB1, Action.BOOT, NEW, before)]
    kept, refused = reboot.keep_for_reboot(changes, RecordingRunner(RebootingHost(unreachable_in_boot=1)), Policy(),
                                           "blue-green")
    assert kept == [] and refused[0].outcome is Outcome.FAILED
    assert "Connection refused" in refused[0].message and "invoke unlock" not in refused[0].message


def test_keep_for_reboot_takes_holds_and_releases_the_unit_or_reports_the_host_locked():
    fake = RebootingHost()
    runner = RecordingRunner(fake)
    before = parse_facts(f"running\t{OLD}\nsystemd\tyes\n")
    changes = [Change(WEB1, Action.BOOT, NEW, before)]
    kept, refused = reboot.keep_for_reboot(changes, runner, Policy(), "blue-green")
    assert kept == changes and refused == [] and runner.steps() == ["lock", "hold", "unlock"]
    runner = RecordingRunner(RebootingHost(held_by_another="who=bob@x,action=switch,pid=1,since=x"))
    kept, refused = reboot.keep_for_reboot(changes, runner, Policy(), "blue-green")
    assert kept == [] and refused[0].outcome is Outcome.LOCKED
    assert "invoke unlock --host web1" in refused[0].message and runner.steps() == ["lock"]


# --- emergency: a host left on its tested system ----------------------------------------------------


def test_a_declined_switch_says_what_runs_and_boots_and_how_to_go_back():
    before = parse_facts(f"running\t{OLD}\nprofile\tsystem-6-link\nprofile-path\t{OLD}\nsystemd\tyes\n")
    switch = Change(WEB1, Action.SWITCH, NEW, before, expect_running=NEW)
    declined = HostResult("web1", Action.SWITCH, Outcome.DECLINED, OLD, OLD, "declined; nothing changed", 6, 6)
    said = emergency.still_tested(switch, declined)
    assert said.outcome is Outcome.DECLINED and said.new_system == NEW and said.generation == 6
    assert "nothing changed" not in said.message
    assert said.message.startswith("declined the switch: it runs the test-activated system nixos-system-web1-1.1 "
                                   "and boots the old one (generation 6, nixos-system-web1-1.0): its next boot "
                                   "goes back")
    assert "invoke rollback --host web1 --generation 6" in said.message
    back = emergency.back_change(switch)
    assert (back.action, back.system, back.before.running, back.expect_running) == (Action.TEST, OLD, NEW, None)
