"""Plans that say what will happen (#18, 7-9): what runs and what boots, each with its own
generation; when checks run (none on a `boot`, after the reboot for blue-green) and what a
`boot` leaves running; which hosts go in which batch, and the policy in force."""

from __future__ import annotations

from nixtasks.actions import inspection, plan
from nixtasks.fleet import engine, flow, pipeline
from nixtasks.host import generations
from nixtasks.host.facts import Facts, parse_facts
from nixtasks.inventory import parse_sizes
from nixtasks.models import Action, GitState, Host, HostPlan, HostResult, Outcome, Plan, Policy, Target
from tests.unit.test_pipeline import NEW, OLD, FakeHost, apply

WEB1 = Host("web1", "web1", Target("web1", "root"))
V10, V11, V12 = (f"/nix/store/{c * 32}-nixos-system-web1-{v}" for c, v in (("a", "1.0"), ("b", "1.1"), ("c", "1.2")))
GIT = GitState("a" * 40)


def host_lines(hp: HostPlan) -> list[str]:
    """The plan's lines about the host, from its action on."""
    lines = plan.render(Plan(hp.action, (hp,), GIT)).splitlines()
    return lines[lines.index("    action:  " + hp.action.value):]


# --- 7: what runs and what boots, each with its own generation ---------------------------------


def facts_text(running: str, boot: int, links: dict[int, str]) -> str:
    return (f"running\t{running}\nprofile\tsystem-{boot}-link\nprofile-path\t{links[boot]}\n"
            + "".join(f"running-link\t/nix/var/nix/profiles/system-{n}-link\n" for n, p in links.items()
                      if p == running))


def test_the_facts_say_which_generation_runs_or_that_none_does():
    after_test = parse_facts(facts_text(V11, 6, {5: V10, 6: V10}))
    assert (after_test.running_generation, after_test.generation) == (None, 6)
    after_boot = parse_facts(facts_text(V10, 6, {5: V10, 6: V11}))
    assert (after_boot.running_generation, after_boot.generation) == (5, 6)
    # a system that is two generations runs as the one that boots, else as the newest
    assert parse_facts(facts_text(V10, 6, {4: V10, 6: V10})).running_generation == 6
    assert parse_facts(facts_text(V10, 6, {4: V10, 5: V10, 6: V11})).running_generation == 5
    assert parse_facts("running\t\nprofile\t\n").running_generation is None


def test_a_test_activated_system_is_not_labelled_with_the_boot_generation():
    hp = HostPlan(WEB1, Action.SWITCH, V12, V11, "", running_generation=None, boot_system=V10, boot_generation=6)
    assert host_lines(hp)[1:4] == [
        f"    runs:    {V11} (test-activated, no generation)",
        f"    boots:   {V10} (generation 6)",
        f"    new:     {V12}",
    ]
    assert "generation 6" not in host_lines(hp)[1]


def test_the_same_system_running_and_booting_is_one_line_with_its_generation():
    hp = HostPlan(WEB1, Action.SWITCH, V12, V10, "", running_generation=6, boot_system=V10, boot_generation=6)
    assert host_lines(hp)[1] == f"    now:     {V10} (generation 6, runs and boots)"
    assert not any(line.startswith(("    runs:", "    boots:")) for line in host_lines(hp))


def test_after_a_boot_deploy_the_running_generation_is_not_the_boot_entry():
    hp = HostPlan(WEB1, Action.SWITCH, V12, V10, "", running_generation=5, boot_system=V11, boot_generation=6)
    assert host_lines(hp)[1:3] == [f"    runs:    {V10} (generation 5, not the boot entry)",
                                   f"    boots:   {V11} (generation 6)"]


def test_a_fresh_host_and_one_that_only_has_a_boot_entry():
    fresh = HostPlan(WEB1, Action.BOOT, V10, None)
    assert host_lines(fresh)[1] == "    now:     (no system activated yet)"
    booted_later = HostPlan(WEB1, Action.SWITCH, V11, None, boot_system=V10, boot_generation=1)
    assert host_lines(booted_later)[1:3] == ["    runs:    (no system activated yet)",
                                             f"    boots:   {V10} (generation 1)"]


def test_the_diff_line_says_what_the_action_still_changes():
    tested = dict(running_generation=None, boot_system=V10, boot_generation=6)
    switch = HostPlan(WEB1, Action.SWITCH, V11, V11, "", **tested)  # type: ignore[arg-type]
    assert host_lines(switch)[-1] == ("    diff:    none (the host already runs this system; the switch makes it "
                                      "the boot entry)")
    again = HostPlan(WEB1, Action.TEST, V11, V11, "", **tested)  # type: ignore[arg-type]
    assert host_lines(again)[-1] == "    diff:    none (the host already runs this system)"
    boots = HostPlan(WEB1, Action.BOOT, V10, V11, "", **tested)  # type: ignore[arg-type]
    assert host_lines(boots)[-1] == "    diff:    none (the host already boots this system)"
    runs_it = HostPlan(WEB1, Action.BOOT, V11, V11, "pkg: 1.0 → 1.1", **tested)  # type: ignore[arg-type]
    assert host_lines(runs_it)[-2:] == ["    diff:", "      pkg: 1.0 → 1.1"]  # it does not boot it yet


def test_a_rollback_plan_names_the_generation_it_goes_to():
    hp = HostPlan(WEB1, Action.SWITCH, V10, V11, "", running_generation=6, boot_system=V11, boot_generation=6,
                  new_generation=5)
    assert host_lines(hp)[2] == f"    new:     {V10} (generation 5)"


def status_row(facts: Facts) -> inspection.StatusRow:
    return inspection.StatusRow("web1", True, facts.generation, facts.running, "drifted", "unknown", (), "",
                                facts.running_generation, facts.boot_path)


def test_status_labels_what_runs_not_with_the_boot_generation():
    tested = status_row(parse_facts(facts_text(V11, 6, {5: V10, 6: V10})))
    assert tested.generation_cell() == "test-activated (boots 6)"
    assert tested.as_json()["generation"] == 6 and tested.as_json()["running_generation"] is None
    assert tested.as_json()["test_activated"] is True and tested.as_json()["boot_system"] == V10
    assert status_row(parse_facts(facts_text(V10, 6, {5: V10, 6: V11}))).generation_cell() == "5 (boots 6)"
    same = status_row(parse_facts(facts_text(V10, 6, {6: V10})))
    assert same.generation_cell() == "6" and same.as_json()["test_activated"] is False


def test_generations_name_a_running_system_that_is_no_generation():
    gens = generations.parse("   5   2026-12-01 10:00:00\n   6   2026-12-02 10:00:00   (current)\n",
                             f"gen\t5\t{V10}\t1.0\t\t\ngen\t6\t{V10}\t1.0\t\t\nrunning\t{V11}\n")
    assert [g.path for g in gens.generations] == [V10, V10]
    assert generations.render("web1", gens).splitlines()[-1] == (
        f"  runs {V11}: test-activated, no generation (the next boot runs generation 6)")
    switched = generations.parse("   6   2026-12-02 10:00:00   (current)\n",
                                 f"gen\t6\t{V11}\t1.1\t\t\nrunning\t{V11}\n")
    assert "test-activated" not in generations.render("web1", switched)


# --- 8: when checks run, and what a `boot` leaves running --------------------------------------


def test_a_boot_plan_promises_no_checks_and_no_watchdog():
    text = engine.describe_policy(Policy(), ["web1"], Action.BOOT).splitlines()
    assert text[1:] == [
        "  effect:   only the boot entry is set: each host runs what it runs now until it reboots; a host whose "
        "boot entry is not the new system is rolled back",
        "  checks:   none: they would test the system that runs now, not the new one (after the reboot: invoke "
        "verify)",
        "  watchdog: none: nothing is activated now",
    ]


def test_a_blue_green_plan_checks_after_the_reboot():
    text = engine.describe_policy(Policy(), ["web1"], Action.BOOT, reboot=60).splitlines()
    assert text[1] == ("  effect:   the boot entry is set (a host whose boot entry is not the new system is rolled "
                       "back), then each host is rebooted into it and has 60 s to answer running it")
    assert text[2] == ("  checks:   after the reboot, on the new system (never before the host answers with a new "
                       "boot id); a host that fails is booted back into its previous generation")
    assert text[3].startswith("  watchdog: none: nothing is activated without a reboot")
    unchecked = engine.describe_policy(Policy(checks=False, rollback=False), ["web1"], Action.BOOT, reboot=60)
    assert ("  checks:   SKIPPED (--no-checks); after the reboot it must still run the new system; a host that "
            "fails is LEFT AS IT IS (--no-rollback)") in unchecked.splitlines()


def test_a_boot_outcome_says_the_host_still_runs_the_old_system():
    fake = FakeHost()
    result, runner = apply(fake, action=Action.BOOT)
    assert result.outcome is Outcome.OK and fake.running == OLD and fake.profile == 2
    assert result.message == "boot entry set (generation 2); it still runs nixos-system-web1-1.0 until it reboots"
    assert result.new_system == NEW and result.generation == 2
    progress = [c for c in runner.calls if c.step == "unit"]
    assert progress == []  # no check ran against the old system


def test_a_boot_question_names_what_becomes_the_boot_entry():
    assert plan.approval_question(HostPlan(WEB1, Action.BOOT, V11, V10)) == \
        "Make nixos-system-web1-1.1 the boot entry of web1 (root@web1)?"


def test_a_boot_of_what_already_runs_and_of_a_fresh_host():
    change = pipeline.Change(WEB1, Action.BOOT, NEW, Facts(reachable=True, running=OLD, generation=1))
    assert pipeline.boot_note(change, Facts(reachable=True, running=NEW, generation=2)) == \
        "boot entry set (generation 2); it already runs this system"
    assert pipeline.boot_note(change, Facts(reachable=True, running="", generation=1)) == \
        "boot entry set (generation 1); it runs no system until it reboots"


# --- 9: which hosts go in which batch, and the policy in force ---------------------------------


def test_the_plan_lists_each_batch_the_pause_and_what_a_halt_does():
    policy = Policy(parallel=2, batches=parse_sizes("1,2"), pause=30, max_fail_percentage=25,
                    rollback_batch_on_failure=True)
    text = engine.describe_policy(policy, ["web1", "web2", "db1", "db2", "db3"], Action.SWITCH).splitlines()
    assert text[:5] == [
        "  batches:  3, one after another, 30 s apart (--pause), up to 2 host(s) at a time",
        "    1: web1",
        "    2: web2, db1",
        "    3: db2, db3",
        "  halt:     when more than 25% of a batch fails (failed hosts that halt it: 1 of 2, 1 of 1): the batches "
        "after it do not start; its healthy hosts are rolled back too (--rollback-batch-on-failure)",
    ]


def test_without_rollback_batch_on_failure_the_healthy_hosts_keep_the_new_system():
    text = engine.describe_policy(Policy(batches=parse_sizes("1")), ["web1", "web2"], Action.SWITCH).splitlines()
    assert text[3] == ("  halt:     when a host of a batch fails (--max-fail-percentage 0): the batches after it do "
                       "not start; its healthy hosts keep the new system (--rollback-batch-on-failure rolls them "
                       "back too)")


def test_one_batch_halts_nothing_unless_its_healthy_hosts_go_back():
    one = engine.describe_policy(Policy(), ["web1", "web2", "db1"], Action.SWITCH).splitlines()
    assert one[0] == "  batches:  one (web1, web2, db1), 3 at a time" and not one[1].startswith("  halt:")
    back = engine.describe_policy(Policy(max_fail_percentage=50, rollback_batch_on_failure=True),
                                  ["web1", "web2", "db1"], Action.BOOT).splitlines()
    assert back[1] == ("  halt:     when more than 50% of a batch fails (failed hosts that halt it: 2 of 3): its "
                       "healthy hosts are rolled back too (--rollback-batch-on-failure)")


def test_a_batch_that_may_fail_whole_never_halts():
    policy = Policy(batches=parse_sizes("2"), max_fail_percentage=100)
    text = engine.describe_policy(policy, ["a", "b", "c"], Action.TEST)
    assert "  halt:     never (100% of a batch may fail: --max-fail-percentage)" in text.splitlines()


def test_the_canary_goes_before_the_batches():
    one = Policy(batches=parse_sizes("1"))
    text = engine.describe_policy(one, ["web1", "web2", "db1"], Action.SWITCH, first=["web1"])
    assert text.splitlines()[:3] == ["  batches:  web1 first (the canary), then 2, one after another, up to 1 "
                                     "host(s) at a time", "    1: web2", "    2: db1"]
    alone = engine.describe_policy(Policy(batches=parse_sizes("1")), ["web1"], Action.SWITCH, first=["web1"])
    assert alone.splitlines()[0] == "  batches:  web1 (the canary), all at once"


def test_the_watchdog_line_names_the_hosts_it_cannot_guard():
    fresh = pipeline.Change(WEB1, Action.SWITCH, NEW, Facts(reachable=True, running="", systemd=True))
    guarded = pipeline.Change(Host("web2", "web2", Target("web2", "root")), Action.SWITCH, NEW,
                              Facts(reachable=True, running=OLD, systemd=True))
    unwatched = engine.unwatched_hosts([fresh, guarded], Policy())
    assert unwatched == {"web1": "it runs no system yet to go back to"}
    text = engine.describe_policy(Policy(), ["web1", "web2"], Action.SWITCH, unwatched=unwatched).splitlines()
    assert text[-1] == ("  watchdog: a remote host reverts by itself unless it confirms within 30 s; not on web1 (it "
                        "runs no system yet to go back to)")
    several = {"web1": "it runs no system yet to go back to", "db1": "it runs no system yet to go back to",
               "box": "this machine"}
    assert engine.describe_policy(Policy(), ["web1", "db1", "box"], Action.TEST, unwatched=several).splitlines()[-1] \
        == ("  watchdog: a remote host reverts by itself unless it confirms within 30 s; not on web1, db1 (it runs no "
            "system yet to go back to); not on box (this machine)")
    off = engine.describe_policy(Policy(watchdog=False, checks=False), ["web1"], Action.TEST).splitlines()
    assert off[-2:] == ["  checks:   SKIPPED (--no-checks); a failed host is rolled back",
                        "  watchdog: OFF (--no-watchdog)"]


def test_the_plan_names_the_hosts_left_out():
    lines: list[str] = []
    change = pipeline.Change(WEB1, Action.SWITCH, NEW, Facts(reachable=True, running=OLD, generation=1,
                                                             running_generation=1, boot_path=OLD, systemd=True))
    skipped = (HostResult("db1", Action.SWITCH, Outcome.SKIPPED, message="unreachable: db1: cannot reach the host"),
               HostResult("web2", Action.SWITCH, Outcome.FAILED, message="error: attribute missing\nmore"))
    req = engine.DeployRequest(Action.SWITCH, (WEB1,), ".")
    prep = engine.Prepared(req, GIT, None, (change,), skipped)  # type: ignore[arg-type]
    engine.show_plan(prep, flow.Tools(None, None, None, lines.append))  # type: ignore[arg-type]
    text = "\n".join(lines).splitlines()
    assert f"    now:     {OLD} (generation 1, runs and boots)" in text
    assert "  left out: db1 (unreachable: db1: cannot reach the host)" in text
    assert "  left out: web2 (error: attribute missing)" in text
    assert text.index("  left out: web2 (error: attribute missing)") < text.index(
        "  batches:  one (web1), 1 at a time")
