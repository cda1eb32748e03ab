"""The lab's link (`labctl up --rtt --rate`): the relay's queue and counts, its refusals, the ssh
config and environment it gives, and labctl's one-line refusals of bad values. No root, no lab:
the relay runs against an echo server on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"
sys.path.insert(0, str(LAB))

from nixlab import config  # noqa: E402
from nixlab.link import parse_link, proxy_command, update_link  # noqa: E402
from nixlab.registry import Registry  # noqa: E402
from nixlab.relay import DelayQueue, Tally, allowed, parse_args  # noqa: E402

RELAY = LAB / "nixlab" / "relay.py"


def test_chunks_are_released_at_arrival_plus_the_delay_in_arrival_order():
    queue = DelayQueue(0.025)
    queue.push(b"a", now=10.0)
    queue.push(b"bc", now=10.010)
    assert queue.held == 3 and queue.next_due() == pytest.approx(10.025)
    assert queue.pop_due(10.024) == []
    assert queue.pop_due(10.025) == [b"a"]
    assert queue.pop_due(10.034) == [] and queue.pop_due(10.035) == [b"bc"]
    assert queue.held == 0 and queue.next_due() is None


def test_the_delay_is_latency_not_throttling_every_chunk_is_in_flight_at_once():
    queue = DelayQueue(0.050)
    for i in range(1000):
        queue.push(bytes(1024), now=1.0 + i / 100_000)  # 1 MiB within 10 ms
    assert queue.pop_due(1.049) == []
    assert len(queue.pop_due(1.050 + 0.010)) == 1000  # all of it one delay after it came


def test_the_end_of_the_stream_is_delayed_like_the_data_before_it():
    queue = DelayQueue(0.5)
    queue.push(b"last", now=0.0)
    queue.push(b"", now=0.1)
    assert queue.pop_due(0.5) == [b"last"]
    assert queue.pop_due(0.6) == [b""]


def test_a_round_trip_is_counted_each_time_the_host_answers_after_the_deployer_spoke():
    tally = Tally("web1", "10.250.0.11")
    for direction, size in (("down", 40), ("up", 30), ("up", 10), ("down", 50), ("down", 5), ("up", 1),
                            ("down", 2)):
        tally.seen(direction, size)
    assert (tally.round_trips, tally.chunks_up, tally.bytes_up) == (2, 3, 41)
    assert (tally.chunks_down, tally.bytes_down) == (4, 97)
    record = json.loads(tally.record())
    assert record["name"] == "web1" and record["round_trips"] == 2 and record["connections"] == 1


def test_the_relay_connects_only_to_the_labs_networks_and_loopback():
    lab = ["10.250.3.0/24", "fd00:250:3::/64"]
    assert allowed("10.250.3.11", lab) and allowed("fd00:250:3::11", lab) and allowed("127.0.0.1", lab)
    assert allowed("::1", lab)
    assert not allowed("10.250.4.11", lab) and not allowed("192.0.2.1", lab) and not allowed("fd00:250:4::11", lab)


def test_the_relays_arguments_are_those_labctl_writes():
    args = parse_args(["--rtt", "50", "--stats", "/s", "--allow", "10.0.0.0/8", "--allow", "::1/128", "web1",
                       "10.250.0.11", "22"])
    assert (args.rtt, args.stats, args.allow, args.name, args.address, args.port) == (
        50.0, "/s", ["10.0.0.0/8", "::1/128"], "web1", "10.250.0.11", 22)
    with pytest.raises(ValueError):
        parse_args(["--rtt", "50", "web1", "10.250.0.11", "22"])


def echo_server() -> tuple[socket.socket, int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_the_relay_carries_a_conversation_and_a_bulk_transfer_intact_and_counts_them(tmp_path):
    server, port = echo_server()
    with server:
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(RELAY), "--rtt", "20", "--stats", str(tmp_path),
                                 "--allow", "10.250.0.0/24", "web1", "127.0.0.1", str(port)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        for i in range(3):
            proc.stdin.write(b"question %d\n" % i)
            proc.stdin.flush()
            assert proc.stdout.readline() == b"question %d\n" % i
        bulk = os.urandom(3 * 1024 * 1024)
        writer = threading.Thread(target=lambda: (proc.stdin.write(bulk), proc.stdin.close()))  # type: ignore[union-attr]
        writer.start()
        assert proc.stdout.read() == bulk
        writer.join()
        assert proc.wait(timeout=30) == 0
    [record] = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert record["name"] == "web1" and record["address"] == "127.0.0.1" and record["connections"] == 1
    assert record["bytes_up"] == record["bytes_down"] == len(bulk) + 3 * len(b"question 0\n")
    assert record["round_trips"] >= 3 and record["cpu_s"] > 0
    assert list((tmp_path / "pids").iterdir()) == []  # its PID file goes with it


def test_the_relay_refuses_an_address_outside_the_lab_in_one_line_before_connecting(tmp_path):
    proc = subprocess.run([sys.executable, "-I", "-S", str(RELAY), "--rtt", "20", "--stats", str(tmp_path),
                           "--allow", "10.250.0.0/24", "web1", "192.0.2.1", "22"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 255
    assert proc.stderr == ("relay: 192.0.2.1 is not a lab address; it connects only to 10.250.0.0/24 and "
                           "loopback\n")


def test_a_refused_connection_is_reported_in_ssh_s_own_words(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    proc = subprocess.run([sys.executable, "-I", "-S", str(RELAY), "--rtt", "0", "--stats", str(tmp_path),
                           "web1", "127.0.0.1", str(port)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert (proc.returncode, proc.stderr) == (255, f"ssh: connect to host 127.0.0.1 port {port}: Connection refused\n")


def test_the_ssh_config_sends_connections_through_the_relay_only_with_a_round_trip_time():
    reg: Registry = {"hosts": {"web1": 1}}
    assert proxy_command(reg) is None
    assert update_link(reg, parse_link("50", "100")) and reg["link"] == {"rtt_ms": 50.0, "rate_mbit": 100.0}
    command = proxy_command(reg)
    assert command is not None and command.endswith(" %n %h %p")
    assert f" -I -S {config.RELAY} --rtt 50 --stats {config.RELAY_DIR} " in command
    assert f"--allow {config.SUBNET}.0/24 --allow {config.IPV6_PREFIX}/64" in command
    # 0 takes one away and keeps the other; the same values again change nothing.
    assert update_link(reg, parse_link("0", None)) and reg["link"] == {"rate_mbit": 100.0}
    assert proxy_command(reg) is None and not update_link(reg, parse_link(None, "100"))
    assert update_link(reg, parse_link(None, "0")) and "link" not in reg


@pytest.mark.parametrize(("flags", "line"), [
    (["--rtt", "-1"], "error: --rtt -1: give milliseconds from 0 to 10000 (0 takes it away)\n"),
    (["--rtt", "fast"], "error: --rtt fast: give milliseconds from 0 to 10000 (0 takes it away)\n"),
    (["--rtt", "10001"], "error: --rtt 10001: give milliseconds from 0 to 10000 (0 takes it away)\n"),
    (["--rate", "nan"], "error: --rate nan: give Mbit/s from 0 to 100000 (0 takes it away)\n"),
    (["web1", "--rate", "-5"], "error: --rate -5: give Mbit/s from 0 to 100000 (0 takes it away)\n"),
])
def test_labctl_up_refuses_a_bad_rtt_or_rate_in_one_line_with_exit_2_and_changes_nothing(tmp_path, flags, line):
    state = tmp_path / "state"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXTASKS_LAB") and k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(LAB / "labctl"), "up", *flags], text=True, capture_output=True,
                          env={**clean, "NIXTASKS_LAB_ID": "7", "NIXTASKS_LAB_DIR": str(state)}, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", line)
    assert not state.exists()


def test_the_environment_names_the_link_a_lab_keeps(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "hosts.json").write_text(json.dumps({"hosts": {}, "link": {"rtt_ms": 50.0, "rate_mbit": 100.0}}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NIXTASKS_LAB") and k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(LAB / "labctl"), "env"], text=True, capture_output=True,
                          env={**clean, "NIXTASKS_LAB_DIR": str(state)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[3:] == [
        "export NIXTASKS_LAB_RTT_MS=50",
        f"export NIXTASKS_LAB_RELAY_STATS={state}/relay/stats.jsonl",
        "export NIXTASKS_LAB_RATE_MBIT=100",
    ]

