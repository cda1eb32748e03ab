"""IPv6 targets: which forms the inventory and --target-host take, and what ssh, nix copy and
curl are given for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from nixtasks import inventory
from nixtasks.actions.checks import run_check, ssh_address
from nixtasks.errors import InventoryError, UsageError
from nixtasks.host import commands
from nixtasks.host.runner import Result
from nixtasks.models import Check, Command, Host, Target
from tests.recording import RecordingRunner

PATH = "/nix/store/abc-nixos-system-web1-1.0"


@pytest.mark.parametrize("spec, user, address", [
    ("root@[fd00::11]", "root", "fd00::11"),
    ("[fd00::11]", None, "fd00::11"),
    ("fd00::11", None, "fd00::11"),
    ("deploy@fd00:250:6::12", "deploy", "fd00:250:6::12"),
    ("::1", None, "::1"),
    ("root@[2001:DB8:0:0:0:0:0:1]", "root", "2001:DB8:0:0:0:0:0:1"),
    ("[::ffff:10.250.0.11]", None, "::ffff:10.250.0.11"),
    ("root@web1", "root", "web1"),
    ("10.250.0.11", None, "10.250.0.11"),
])
def test_targets_by_name_and_by_ipv6_address(spec, user, address):
    assert inventory.split_target(spec) == (user, address)
    assert inventory.parse_target(spec, None, None).address == address


@pytest.mark.parametrize("spec", [
    "root@[fd00::11", "fd00::11]", "[web1]", "root@[fd00::11]:22", "fd00:::11", "fd00::zz", "gggg::1",
    "1:2:3:4:5:6:7:8:9", "::1::", ":", "[]", "[::1]x", "fd00::11 -oProxyCommand=id", "-[::1]", "[-::1]",
    "root@-fd00::1", "fd00::11%eth0", "[fe80::1%25eth0]", "root@@[::1]", "Root@[::1]", "[::1]@root",
    "fd00::11\n", "\nfd00::11", "[fd00::11]\t",
])
def test_what_is_not_a_real_ipv6_address_is_refused(spec):
    assert inventory.split_target(spec) is None
    with pytest.raises(UsageError, match="is not a valid ssh target"):
        inventory.parse_target(spec, None, None)


def test_a_zone_id_is_refused_with_the_way_around_it():
    with pytest.raises(UsageError, match="zone id .* HostName"):
        inventory.parse_target("fe80::1%eth0", None, None)


def write(tmp_path: Path, text: str) -> inventory.Inventory:
    (tmp_path / "nixtasks.toml").write_text(text)
    return inventory.load(cwd=tmp_path, env={})


def test_the_inventory_and_the_command_line_take_ipv6_targets(tmp_path):
    inv = write(tmp_path, '[defaults]\nbuild_host = "[fd00::2]"\n\n[hosts.web1]\ntarget = "root@[fd00::11]"\n')
    host = inventory.resolve_host(inv, "web1")
    assert host.target == Target("fd00::11", "root", sudo=False)
    assert host.build_host == Target("fd00::2", None, sudo=True)
    other = inventory.resolve_host(inv, "web1", target_host="deploy@fd00::12")
    assert other.target == Target("fd00::12", "deploy", sudo=True)
    with pytest.raises(InventoryError, match=r'hosts\.web2\.target: expected a string like "deploy@web1", '
                                             r'"root@\[fd00::11\]" or "fd00::11" \(an IPv6 zone id'):
        write(tmp_path, '[hosts.web2]\ntarget = "fe80::1%lab0"\n')


def test_people_read_the_address_in_brackets_and_ssh_gets_it_bare():
    target = Target("fd00::11", "root")
    assert str(target) == "root@[fd00::11]" and target.ssh_destination == "root@fd00::11"
    assert str(Target("fd00::11")) == "[fd00::11]" and Target("fd00::11").ssh_destination == "fd00::11"
    assert str(Target("web1", "root")) == "root@web1" == Target("web1", "root").ssh_destination


def test_ssh_and_nix_copy_argv_for_an_ipv6_host():
    root, deploy = Target("fd00::11", "root"), Target("fd00::12", "deploy", sudo=True)
    argv = commands.ssh_argv(Command(("true",)), root, ("-o", "BatchMode=yes"))
    assert argv[:5] == ("ssh", "-o", "BatchMode=yes", "root@fd00::11", "--")
    assert commands.ssh_batch_argv([Command(("true",))], deploy, (), "M")[1:3] == ("deploy@fd00::12", "--")
    assert commands.close_master(root, ()) == ("ssh", "-O", "exit", "root@fd00::11")
    base = ("nix", "--extra-experimental-features", "nix-command flakes", "copy")
    assert commands.nix_copy(PATH, to=root, source=deploy).argv == (
        *base, "--from", "ssh://deploy@[fd00::12]", "--to", "ssh://root@[fd00::11]", "--", PATH)
    assert commands.nix_copy_derivations(["/nix/store/x.drv"], to=Target("fd00::2")).argv == (
        *base, "--derivation", "--to", "ssh://[fd00::2]", "--", "/nix/store/x.drv")


class ResolvingRunner(RecordingRunner):
    """`ssh -G` answers `hostname` for every host."""

    def __init__(self, hostname: str) -> None:
        super().__init__(lambda step, cmd, target, fresh: Result(0, "ok\n200", ""))
        self.hostname = hostname

    def ssh_settings(self, target: Target) -> dict[str, str]:
        return {"hostname": self.hostname} if self.hostname else {}


@pytest.mark.parametrize("target, resolved, address", [
    (Target("fd00::11", "root"), "fd00::11", "[fd00::11]"),
    (Target("fd00::11", "root"), "", "[fd00::11]"),  # ssh -G could not say
    (Target("web1", "root"), "fd00::11", "[fd00::11]"),  # the ssh config's HostName
    (Target("web1", "root"), "fe80::1%lab0", "[fe80::1%25lab0]"),
    (Target("web1", "root"), "10.250.0.11", "10.250.0.11"),
    (Target("web1", "root"), "", "web1"),
])
def test_the_address_in_a_check_url_is_bracketed_for_ipv6(target, resolved, address):
    host = Host("web1", "web1", target)
    runner = ResolvingRunner(resolved)
    assert ssh_address(host, runner) == address
    ok, _ = run_check(Check("http", "http://{address}:8080/health"), host, address, runner)
    assert ok
    curl = runner.calls[-1].cmd.argv
    assert curl[:3] == ("curl", "-g", "-sS") and curl[-1] == f"http://{address}:8080/health"
