"""The deploy journal: one JSON line per action that changes (or was refused to change) a
host, kept on the deployer and on the host itself, so that another operator sees it too."""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..host import commands
from ..host.runner import Result, Runner
from ..models import READS_AT_ONCE, Command, GitState, Host, HostResult, Outcome, at_once

HOST_JOURNAL = commands.HOST_JOURNAL
OUTCOMES = frozenset(o.value for o in Outcome)


def deployer_journal_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("NIXTASKS_JOURNAL"):
        return Path(env["NIXTASKS_JOURNAL"])
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "nixtasks" / "journal.jsonl"


@dataclass(frozen=True)
class Record:
    id: str
    time: str
    operator: str
    host: str
    action: str
    outcome: str  # ok, failed, declined, not selected, refused, rolled-back
    before_path: str | None = None
    before_generation: int | None = None
    after_path: str | None = None
    after_generation: int | None = None
    git_revision: str | None = None
    git_dirty: bool | None = None
    reason: str = ""
    message: str = ""
    # Optional (records written before they existed lack them, and still parse):
    machine_id: str | None = None  # the host's /etc/machine-id: the machine, whatever its name
    repository: str | None = None  # the deployer's repository (its git toplevel) the record came from
    tried_path: str | None = None  # the system the action activated (or began to): a failure's culprit

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=True)


def new_record(host: str, action: str, outcome: str, **fields: Any) -> Record:
    return Record(id=uuid.uuid4().hex, time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  operator=f"{getpass.getuser()}@{socket.gethostname()}", host=host, action=action,
                  outcome=outcome, **fields)


TEXT_FIELDS = ("id", "time", "operator", "host", "action", "outcome", "reason", "message")
OPTIONAL_TEXT = ("before_path", "after_path", "git_revision", "machine_id", "repository", "tried_path")
NUMBERS = ("before_generation", "after_generation")
LATER_FIELDS = frozenset(("machine_id", "repository", "tried_path"))  # may be missing from older records
# Outcomes that say the system it tried was bad (Outcome's values, and the watchdog's record).
FAILED_OUTCOMES = frozenset(("failed", "rolled back", "reverted by the watchdog"))
STARTED = "started"  # the activation's own record, written on the host as it begins


def well_formed(data: object) -> bool:
    """A host's journal is written by whoever can write it: trust only the exact shape."""
    fields = set(Record.__dataclass_fields__)
    if not isinstance(data, dict) or not fields - LATER_FIELDS <= set(data) <= fields:
        return False
    data = {**{k: None for k in LATER_FIELDS}, **data}
    return (all(isinstance(data[k], str) for k in TEXT_FIELDS)
            and all(data[k] is None or isinstance(data[k], str) for k in OPTIONAL_TEXT)
            and all(data[k] is None or (isinstance(data[k], int) and not isinstance(data[k], bool))
                    for k in NUMBERS)
            and (data["git_dirty"] is None or isinstance(data["git_dirty"], bool)))


def parse_lines(text: str) -> list[Record]:
    """Records from journal text; lines that are not records (damaged, foreign) are skipped."""
    records = []
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if well_formed(data):
            records.append(Record(**data))
    return records


def failed_systems(records: Iterable[Record]) -> dict[str, Record]:
    """The systems whose latest verdict is a failure, with that record: a deploy or rollback
    that failed, was rolled back or was reverted by the watchdog. A store path names a system
    for good (a generation number comes back after a gc); a later success of the same
    system clears it."""
    verdicts: dict[str, Record] = {}
    for record in sorted(records, key=lambda r: r.time):
        if record.tried_path is None:
            continue
        if record.outcome in FAILED_OUTCOMES:
            verdicts[record.tried_path] = record
        elif record.outcome == "ok":
            verdicts.pop(record.tried_path, None)
    return verdicts


def of_machine(records: Iterable[Record], name: str, machine_id: str) -> list[Record]:
    """The deployer's records of the machine `machine_id` (under any name), and those under
    `name` that predate machine ids (they may be another machine of that name: see `render`)."""
    return [r for r in records
            if (r.machine_id == machine_id if r.machine_id is not None else r.host == name)]


def printable(text: str) -> str:
    """No terminal control sequences from a journal reach the operator's screen."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def merge(*journals: Iterable[Record]) -> list[Record]:
    """One history: each record once (the deployer's and the host's copy share an id), by time."""
    by_id: dict[str, Record] = {}
    for journal in journals:
        for record in journal:
            by_id.setdefault(record.id, record)
    return sorted(by_id.values(), key=lambda r: (r.time, r.host))


def finished(records: Sequence[Record]) -> list[Record]:
    """One record per host per deploy: an activation's `started` record goes when a later record
    of that host says how it ended (the same system tried, by the same operator); it stays when
    none does (the deployer was killed, and the host alone says what began)."""
    kept: list[Record] = []
    ends: dict[tuple[str, str | None, str], int] = {}  # ends not yet matched with their start
    for record in reversed(records):  # newest first: a start is answered by the first end after it
        mark = (record.host, record.tried_path, record.operator)
        if record.outcome != STARTED:
            ends[mark] = ends.get(mark, 0) + 1
        elif ends.get(mark):
            ends[mark] -= 1
            continue
        kept.append(record)
    return kept[::-1]


def append_local(path: Path, record: Record) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(record.line() + "\n")


def read_local(path: Path) -> list[Record]:
    try:
        return parse_lines(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []


UNKNOWN_MACHINE = ("?: the record does not say which machine (its /etc/machine-id): written by an older nixtasks, "
                   "or before the host was asked (a refusal); it may be about another machine of that name")


def render(records: list[Record]) -> str:
    """A table, oldest first; a host marked `?` is a record that does not say which machine."""
    action_width = max([len(r.action) for r in records] + [6])
    outcome_width = max([len(r.outcome) for r in records] + [7])
    lines = [f"{'TIME':25}  {'HOST':10}  {'ACTION':{action_width}}  {'OUTCOME':{outcome_width}}  {'GEN':9}  "
             f"{'GIT':13}  WHO / WHY"]
    for r in records:
        gens = "-" if r.before_generation is None and r.after_generation is None else \
            f"{r.before_generation or '-'}→{r.after_generation or '-'}"
        git = (r.git_revision or "-")[:12] + ("*" if r.git_dirty else "")
        why = r.operator + (f": {r.reason}" if r.reason else "") + (f" ({r.message})" if r.message else "")
        host = r.host + ("?" if r.machine_id is None else "")
        line = (f"{r.time:25}  {host:10}  {r.action:{action_width}}  {r.outcome:{outcome_width}}  {gens:9}  "
                f"{git:13}  {why}")
        lines.append(printable(line))
    if any(r.machine_id is None for r in records):
        lines.append(UNKNOWN_MACHINE)
    return "\n".join(lines)


class Journal:
    """Writes each record to the deployer's journal and, where it can, to the host's."""

    def __init__(self, runner: Runner, path: Path, git: GitState | None = None, reason: str = "",
                 echo: Callable[[str], None] | None = None, repository: str | None = None) -> None:
        self.runner, self.path, self.git, self.reason, self.repository = runner, path, git, reason, repository
        self.echo = echo or runner.echo
        self.machines: dict[str, str] = {}  # host name -> machine id, as its facts said
        # What this run has settled per host (its one record), and the oks a caller still holds
        # back (a soak or the batch's end may yet take the host back): what a Ctrl-C that lands
        # anywhere reports (fleet/engine.py `reported`).
        self.settled: dict[str, HostResult] = {}
        self.held: dict[str, tuple[Host, str, HostResult]] = {}

    def retold(self, git: GitState | None, reason: str) -> Journal:
        """The same journal (its machines known) writing another git state and reason: a staged
        plan's revision, or the commit update-deploy made after its plan."""
        other = Journal(self.runner, self.path, git, reason, self.echo, self.repository)
        other.machines = dict(self.machines)
        other.settled, other.held = self.settled, self.held  # one run's, whichever journal writes
        return other

    def know(self, hosts: Iterable[Host], machine_ids: Iterable[str]) -> None:
        """Which machine each host is (from its facts): every record says so from now on."""
        self.machines.update((h.name, m) for h, m in zip(hosts, machine_ids) if m)

    def write(self, host: Host, action: str, outcome: str, *, on_host: bool = True, **fields: Any) -> Record | None:
        if outcome in OUTCOMES:  # not "refused": that run never got to its hosts
            self.settle(host, HostResult(host=host.name, action=action, outcome=Outcome(outcome),
                                         message=str(fields.get("message") or "")))
        return self.send(host, action, outcome, on_host=on_host, **fields)

    def send(self, host: Host, action: str, outcome: str, *, on_host: bool = True, **fields: Any) -> Record | None:
        """The record written, on the deployer and (`on_host`) on the host; `write` settles it first."""
        record, cmds = self.prepare(host, action, outcome, on_host=on_host, **fields)
        if cmds:
            self.written(host, self.runner.run_all(cmds, host.target, check=False), len(cmds))
        return record

    def prepare(self, host: Host, action: str, outcome: str, *, on_host: bool = True, local: bool = True,
                **fields: Any) -> tuple[Record | None, list[Command]]:
        """The record, written to the deployer's journal now (unless not `local`: then by
        `keep`), and the commands that write it to the host's, for the caller to send with
        others (`written` then checks them)."""
        if self.runner.dry_run:
            return None, []
        git = {"git_revision": self.git.revision, "git_dirty": self.git.dirty} if self.git else {}
        record = new_record(host.name, action, outcome, reason=self.reason, **git,
                            machine_id=self.machines.get(host.name), repository=self.repository, **fields)
        if local:
            self.keep(record)
        if not on_host:
            return record, []
        return record, [commands.journal_dir(HOST_JOURNAL), commands.journal_append(HOST_JOURNAL, record.line())]

    def written(self, host: Host, results: Sequence[Result], count: int) -> None:
        if len(results) < count or not all(r.ok for r in results[:count]):
            self.echo(f"warning: {host.name}: could not write the host's journal ({HOST_JOURNAL}); "
                      f"the deployer's journal has the record")

    def started(self, host: Host, action: str, before_path: str | None, before_generation: int | None,
                system: str, *, write: bool = True) -> Record | None:
        """The activation's first record, written to the deployer's journal now (unless not
        `write`: then by `keep`, once the host is known to be locked for it): the caller sends its
        line to the host in the activation's own round trip (a killed deployer leaves it)."""
        return self.prepare(host, action, STARTED, on_host=False, local=write, before_path=before_path,
                            before_generation=before_generation, tried_path=system, message="activation started")[0]

    def keep(self, record: Record) -> None:
        """`record` written to the deployer's journal."""
        append_local(self.path, record)

    def write_result(self, host: Host, action: str, result: HostResult) -> Record | None:
        self.settle(host, result)
        return self.send(host, action, result.outcome.value, **result_fields(result))

    def prepare_result(self, host: Host, action: str, result: HostResult) -> tuple[Record | None, list[Command]]:
        self.settle(host, result)
        return self.prepare(host, action, result.outcome.value, **result_fields(result))

    def settle(self, host: Host, result: HostResult) -> None:
        """`result` is the host's for this run (set before its record is sent: a Ctrl-C that
        stops the sending does not lose it)."""
        self.settled[host.name] = result
        self.held.pop(host.name, None)

    def hold(self, host: Host, action: str, result: HostResult) -> None:
        """An ok whose record waits (see `settled`): journalled as it is if the run is stopped first."""
        self.held[host.name] = (host, action, result)

    def write_held(self) -> None:
        """Every ok still held, journalled as it is (the run ends before anything changed it)."""
        for host, action, ok in list(self.held.values()):
            self.write_result(host, action, ok)


def result_fields(result: HostResult) -> dict[str, Any]:
    return {"on_host": result.outcome is not Outcome.SKIPPED, "before_path": result.previous_system,
            "before_generation": result.previous_generation, "after_path": result.new_system,
            "after_generation": result.generation, "message": result.message, "tried_path": result.tried_system}


MACHINE_ID = "/etc/machine-id"


def history(hosts: Sequence[Host], runner: Runner, local: Sequence[Record],
            echo: Callable[[str], None]) -> list[Record]:
    """The records of the machines these hosts are: each host's own journal, and the deployer's
    records (`local`) of that machine, by its /etc/machine-id: another repository's host of the
    same name is another machine. The deployer's records from before machine ids are shown,
    marked: hiding them would lose a journal's history at an upgrade."""
    def records_of(host: Host) -> list[Record]:
        cmds = [commands.read_file(HOST_JOURNAL), commands.read_file(MACHINE_ID)]
        results = runner.run_all(cmds, host.target, check=False, keep_going=True)
        if results[-1].exit_code == 255 or len(results) < len(cmds):
            echo(f"warning: {host.name}: unreachable, so which machine it is is not known; showing the "
                 f"deployer's records of every machine called {host.name}")
            return [r for r in local if r.host == host.name]
        machine = results[1].stdout.strip() if results[1].ok else ""
        own = parse_lines(results[0].stdout) if results[0].ok else []
        # The deployer's first: records of one second keep the order it wrote them in.
        if not machine:
            return [*(r for r in local if r.host == host.name), *own]
        return [*of_machine(local, host.name, machine), *own]

    with ThreadPoolExecutor(max_workers=at_once(len(hosts), READS_AT_ONCE)) as pool:
        found = list(pool.map(records_of, hosts))
    return finished(merge(*found))
