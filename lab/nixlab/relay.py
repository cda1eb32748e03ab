"""The lab's latency relay: ssh's ProxyCommand when the lab has a round-trip time (`up --rtt MS`).

    python3 -I -S relay.py --rtt MS --stats DIR [--allow NET]... NAME ADDRESS PORT

The kernel here has no `netem`, so the delay is added in user space: ssh talks to this process
on its stdin and stdout, and it talks to the host's sshd over TCP. Every chunk read from either
side is held on a queue stamped with its arrival and released at arrival + MS/2: latency, not
throttling (any number of chunks are in flight at once, so throughput is what the link gives,
capped only by the bridge's `tbf` when the lab has `--rate`). Before it connects the relay waits
one round trip, as a TCP handshake does before the first byte. It connects only to an address in
the networks given by --allow (the lab's) or loopback.

At exit it appends one JSON line to DIR/stats.jsonl: the host, the chunks and bytes each way,
the round trips seen (each time the host answers after the deployer spoke) and its own CPU
seconds, so that a benchmark counts connections and round trips per host and can leave the
relay's CPU out of the deployer's. While it runs, DIR/pids/PID names it, so that `labctl down`
can kill a relay left behind by PID. One file, standard library only: labctl copies it into the
lab's ssh directory, which deployer hosts see too.
"""

from __future__ import annotations

# Few and light imports (no argparse, json, pathlib or dataclasses): every ssh connection starts
# one relay, and its start-up is paid before the first byte.
import collections
import contextlib
import ipaddress
import os
import resource
import select
import signal
import socket
import sys
import time

CHUNK = 256 * 1024  # the most read at once from either side
HELD_LIMIT = 8 * 1024 * 1024  # stop reading a side while this much of it waits to be written


class DelayQueue:
    """Chunks held for a fixed delay, released in arrival order at arrival + delay.

    The delay is the same for every chunk and arrivals are stamped with a monotonic clock, so the
    queue's order is also the order of release. An empty chunk is the end of the stream, delayed
    like the data before it.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.held = 0  # bytes on the queue
        self._chunks: collections.deque[tuple[float, bytes]] = collections.deque()

    def push(self, data: bytes, now: float) -> None:
        self._chunks.append((now + self.delay, data))
        self.held += len(data)

    def next_due(self) -> float | None:
        return self._chunks[0][0] if self._chunks else None

    def pop_due(self, now: float) -> list[bytes]:
        due: list[bytes] = []
        while self._chunks and self._chunks[0][0] <= now:
            data = self._chunks.popleft()[1]
            self.held -= len(data)
            due.append(data)
        return due


class Tally:
    """What went through one connection. A round trip is counted each time data comes from the
    host after data went to it: the turns of the conversation, each a wait of one RTT (during a
    bulk copy, whose acknowledgements overlap the data, an upper bound)."""

    COUNTS = ("connections", "chunks_up", "chunks_down", "bytes_up", "bytes_down", "round_trips")

    def __init__(self, name: str, address: str) -> None:
        self.name, self.address = name, address
        self.connections, self.round_trips = 1, 0
        self.chunks_up = self.chunks_down = self.bytes_up = self.bytes_down = 0
        self.cpu_s = self.seconds = 0.0
        self._last = ""

    def seen(self, direction: str, size: int) -> None:
        if direction == "up":
            self.chunks_up += 1
            self.bytes_up += size
        else:
            self.chunks_down += 1
            self.bytes_down += size
            if self._last == "up":
                self.round_trips += 1
        self._last = direction

    def record(self) -> str:
        """One line of JSON (written by hand: the json module's import costs more than this)."""
        def text(value: str) -> str:
            return '"' + "".join(c if c.isalnum() or c in ".:-_%" else f"\\u{ord(c):04x}" for c in value) + '"'

        fields = [f'"name": {text(self.name)}', f'"address": {text(self.address)}',
                  *(f'"{k}": {getattr(self, k)}' for k in self.COUNTS),
                  f'"cpu_s": {self.cpu_s:.6f}', f'"seconds": {self.seconds:.6f}']
        return "{" + ", ".join(fields) + "}"


def allowed(address: str, networks: list[str]) -> bool:
    """Loopback or one of the lab's networks: the only places the relay connects to."""
    ip = ipaddress.ip_address(address.split("%")[0])
    return ip.is_loopback or any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


class Side:
    """One direction: read from src, hold, write to dst."""

    def __init__(self, direction: str, src: int, dst: int, delay: float) -> None:
        self.direction, self.src, self.dst = direction, src, dst
        self.queue = DelayQueue(delay)
        self.out = bytearray()  # released, not yet written
        self.read_eof = self.eof_due = self.done = False

    def wants_read(self) -> bool:
        return not self.read_eof and self.queue.held + len(self.out) < HELD_LIMIT

    def read(self, now: float, tally: Tally) -> None:
        try:
            data = os.read(self.src, CHUNK)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.read_eof = True
        else:
            tally.seen(self.direction, len(data))
        self.queue.push(data, now)

    def flush(self, now: float, finish: object) -> None:
        for data in self.queue.pop_due(now):
            if data:
                self.out += data
            else:
                self.eof_due = True
        if self.out:
            try:
                written = os.write(self.dst, self.out)
            except BlockingIOError:
                return
            del self.out[:written]
        if self.eof_due and not self.out and not self.done:
            self.done = True
            finish()  # type: ignore[operator]


def pump(sock: socket.socket, delay: float, tally: Tally) -> None:
    """Relay between stdin/stdout and the socket until both directions have ended."""
    fd = sock.fileno()
    for each in (0, 1, fd):
        os.set_blocking(each, False)
    up = Side("up", 0, fd, delay)
    down = Side("down", fd, 1, delay)
    finishers = {"up": lambda: sock.shutdown(socket.SHUT_WR), "down": lambda: os.close(1)}
    sides = (up, down)
    while not (up.done and down.done):
        now = time.monotonic()
        for side in sides:
            side.flush(now, finishers[side.direction])
        reads = [s.src for s in sides if s.wants_read()]
        writes = [s.dst for s in sides if s.out and not s.done]
        dues = [d for d in (s.queue.next_due() for s in sides) if d is not None]
        if not (reads or writes or dues):
            return
        timeout = max(0.0, min(dues) - now) if dues else None
        readable, _writable, _ = select.select(reads, writes, [], timeout)
        now = time.monotonic()
        for side in sides:
            if side.src in readable and side.wants_read():
                side.read(now, tally)


def connect_error(address: str, port: int, exc: OSError) -> str:
    """ssh's own words for a failed connection, which tools that run ssh read."""
    reason = "Connection timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
    return f"ssh: connect to host {address} port {port}: {reason}"


class Args:
    def __init__(self, rtt: float, stats: str, allow: list[str], name: str, address: str, port: int) -> None:
        self.rtt, self.stats, self.allow, self.name, self.address, self.port = rtt, stats, allow, name, address, port


def parse_args(argv: list[str]) -> Args:
    """--rtt MS --stats DIR [--allow NET]... NAME ADDRESS PORT, as labctl writes them."""
    options: dict[str, list[str]] = {"--rtt": [], "--stats": [], "--allow": []}
    words = list(argv)
    while words and words[0] in options and len(words) > 1:
        options[words.pop(0)].append(words.pop(0))
    if len(words) != 3 or len(options["--rtt"]) != 1 or len(options["--stats"]) != 1:
        raise ValueError("usage: relay.py --rtt MS --stats DIR [--allow NET]... NAME ADDRESS PORT")
    return Args(float(options["--rtt"][0]), options["--stats"][0], options["--allow"], words[0], words[1],
                int(words[2]))


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except ValueError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    started, rtt = time.monotonic(), args.rtt / 1000
    tally = Tally(args.name, args.address)
    pid_file = os.path.join(args.stats, "pids", str(os.getpid()))
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))  # ssh ends its ProxyCommand with SIGHUP
    try:
        with contextlib.suppress(OSError):  # read-only where a deployer host sees the lab's files
            os.makedirs(os.path.dirname(pid_file), exist_ok=True)
            with open(pid_file, "w") as out:
                out.write(f"{os.getpid()}\n")
        try:
            family, kind, proto, _, where = socket.getaddrinfo(args.address, args.port, type=socket.SOCK_STREAM)[0]
        except socket.gaierror as exc:
            print(f"ssh: Could not resolve hostname {args.address}: {exc.strerror}", file=sys.stderr)
            return 255
        if not allowed(str(where[0]), args.allow):
            print(f"relay: {args.address} is not a lab address; it connects only to {', '.join(args.allow)} "
                  "and loopback", file=sys.stderr)
            return 255
        time.sleep(rtt)  # the TCP handshake: a round trip before the first byte
        sock = socket.socket(family, kind, proto)
        sock.settimeout(10)
        try:
            sock.connect(where)
        except OSError as exc:
            print(connect_error(args.address, args.port, exc), file=sys.stderr)
            return 255
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # held chunks go out as released
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            pump(sock, rtt / 2, tally)
        return 0
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        tally.cpu_s, tally.seconds = usage.ru_utime + usage.ru_stime, time.monotonic() - started
        with contextlib.suppress(OSError):
            with open(os.path.join(args.stats, "stats.jsonl"), "a") as out:  # one short write: no interleaving
                out.write(tally.record() + "\n")
            os.unlink(pid_file)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
