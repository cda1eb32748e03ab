from pathlib import Path

import pytest

from nixtasks import inventory
from nixtasks.errors import InventoryError, UsageError
from nixtasks.models import Target


def load(text: str, tmp_path: Path, env=None, name="nixtasks.toml"):
    (tmp_path / name).write_text(text)
    return inventory.load(env=env or {}, cwd=tmp_path)


GOOD = """
[defaults]
flake = "fleet"
ssh_user = "deploy"
ssh_options = ["-p", "2222"]
nix_options = ["--option", "substituters", ""]

[hosts.web1]
target = "10.0.0.1"
tags = ["web"]

[hosts.db1]
target = "root@db1.example"
config = "database"
build_host = "builder"
"""


def test_reads_defaults_and_hosts(tmp_path):
    inv = load(GOOD, tmp_path)
    assert inv.flake == str(tmp_path / "fleet")
    assert inv.defaults.ssh_options == ("-p", "2222")
    web1 = inventory.resolve_host(inv, "web1")
    assert web1.target == Target("10.0.0.1", "deploy", sudo=True)
    assert web1.tags == ("web",)
    db1 = inventory.resolve_host(inv, "db1")
    assert (db1.config, db1.target, db1.build_host) == ("database", Target("db1.example", "root"),
                                                       Target("builder", "deploy", sudo=True))


def test_unlisted_host_targets_its_name(tmp_path):
    host = inventory.resolve_host(load(GOOD, tmp_path), "web7")
    assert (host.name, host.config, host.target.address) == ("web7", "web7", "web7")


def test_command_line_overrides(tmp_path):
    host = inventory.resolve_host(load(GOOD, tmp_path), "web1", target_host="root@10.9.9.9", build_host="localhost",
                                  sudo=True)
    assert host.target == Target("10.9.9.9", "root", sudo=True)
    assert host.build_host is None


def test_environment_overrides(tmp_path):
    inv = load(GOOD, tmp_path, env={"NIXTASKS_SSH_USER": "ops", "NIXTASKS_FLAKE": "github:me/fleet",
                                    "NIXTASKS_SUDO": "0", "NIXTASKS_NIX_OPTIONS": "--option cores 1"})
    assert inv.flake == "github:me/fleet"
    assert inv.defaults.nix_options == ("--option", "cores", "1")
    assert inventory.resolve_host(inv, "web1").target == Target("10.0.0.1", "ops", sudo=False)


def test_pyproject_tool_section(tmp_path):
    inv = load('[tool.nixtasks.hosts.web1]\ntarget = "web1"\n', tmp_path, name="pyproject.toml")
    assert inv.source == "pyproject.toml [tool.nixtasks]"
    assert "web1" in inv.hosts


def test_inventory_path_from_environment(tmp_path):
    (tmp_path / "other.toml").write_text('[hosts.x]\ntarget = "x"\n')
    inv = inventory.load(env={"NIXTASKS_INVENTORY": "other.toml"}, cwd=tmp_path)
    assert "x" in inv.hosts
    with pytest.raises(UsageError, match="no such inventory file"):
        inventory.load("missing.toml", env={}, cwd=tmp_path)


def test_local_host(tmp_path):
    inv = load('[hosts.laptop]\nlocal = true\nconfig = "lap"\n', tmp_path)
    host = inventory.resolve_local(inv, "whatever")
    assert host.is_local and host.config == "lap"
    assert inventory.resolve_local(load("", tmp_path), "box").config == "box"


@pytest.mark.parametrize("text, message", [
    ('[hosts.web1]\ntarget = 5\n', 'nixtasks.toml: hosts.web1.target: expected a string like "deploy@web1"'),
    ('[hosts.web1]\ntarget = "-oProxyCommand=x"\n',
     'nixtasks.toml: hosts.web1.target: expected a string like "deploy@web1"'),
    ('[hosts.web1]\ntarget = "web1; rm -rf /"\n',
     'nixtasks.toml: hosts.web1.target: expected a string like "deploy@web1"'),
    ('[hosts.web1]\ntargte = "web1"\n', "nixtasks.toml: hosts.web1.targte: unknown key; expected one of"),
    ('[hosts."a;b"]\n', "nixtasks.toml: hosts.a;b: expected a host name of letters"),
    ('[hosts.web1]\ntags = "web"\n', 'nixtasks.toml: hosts.web1.tags: expected a list of strings like ["a", "b"]'),
    ('[hosts.web1]\nsudo = "yes"\n', "nixtasks.toml: hosts.web1.sudo: expected true or false"),
    ('[hosts.web1]\nconfig = "a b"\n', "nixtasks.toml: hosts.web1.config: expected a nixosConfigurations name"),
    ('[defaults]\nflake = ""\n', "nixtasks.toml: defaults.flake: expected a non-empty string"),
    ('[defaults]\nssh_user = "Root!"\n', 'nixtasks.toml: defaults.ssh_user: expected a user name like "deploy"'),
    ('[defaults]\nbuild_host = "a b"\n', 'nixtasks.toml: defaults.build_host: expected a string like "deploy@web1"'),
    ('[defaults]\nsudo = 1\n', "nixtasks.toml: defaults.sudo: expected true or false"),
    ('[defautls]\n', "nixtasks.toml: defautls: unknown key; expected one of blue_green, cache, defaults, hosts, "
                      "policy"),
    ('[cache]\npublic_key = "k:x"\n', "nixtasks.toml: cache.push: required in [cache]"),
    ('[cache]\npush = "nginx"\npublic_key = "x"\nsecret_key_file = "k"\n',
     "nixtasks.toml: cache.push: expected a Nix store URL: http://..., https://..., s3://..., ssh://..."),
    (f'[cache]\npush = "http://c"\npublic_key = "c-1:{"A" * 44}"\nsecret_key_file = "k"\n',
     'nixtasks.toml: cache.public_key: expected the cache\'s public key as Nix prints it, "name:base64"'),
    ('[cache]\npush = "http://c"\npublic_key = "x"\nsecret_key_file = "k"\nsigned = true\n',
     "nixtasks.toml: cache.signed: unknown key; expected one of only, public_key, push, secret_key_file, url"),
    ('[defaults]\nbuilders = ["ssh://a x86_64-linux ; ssh://b"]\n',
     'nixtasks.toml: defaults.builders: expected one builder per string, like ["ssh://builder x86_64-linux - 4"]'),
    ('hosts = 3\n', "nixtasks.toml: hosts: expected a table of [hosts.<name>] sections"),
])
def test_each_mistake_names_file_key_and_expectation(tmp_path, text, message):
    with pytest.raises(InventoryError) as err:
        load(text, tmp_path)
    assert str(err.value).startswith(message)
    assert err.value.line.startswith("error: nixtasks.toml: ")
    assert "\n" not in err.value.line


def test_invalid_toml_is_one_line(tmp_path):
    with pytest.raises(UsageError, match=r"^nixtasks.toml: not valid TOML"):
        load("[hosts\n", tmp_path)


def test_bad_environment_value(tmp_path):
    with pytest.raises(InventoryError, match="environment: NIXTASKS_SUDO: expected 1 or 0"):
        load("", tmp_path, env={"NIXTASKS_SUDO": "maybe"})


@pytest.mark.parametrize("name", ["web1;reboot", "$(id)", "a b", "-x", "", "a\nb", "../etc"])
def test_hostile_host_names_are_refused(tmp_path, name):
    with pytest.raises(UsageError, match="not a valid host name"):
        inventory.resolve_host(load("", tmp_path), name)


@pytest.mark.parametrize("target", ["-oProxyCommand=touch /tmp/x", "a b", "web1;id", "$(id)", "u@", "@h"])
def test_hostile_targets_are_refused(tmp_path, target):
    with pytest.raises(UsageError, match="not a valid ssh target"):
        inventory.resolve_host(load("", tmp_path), "web1", target_host=target)


def test_a_target_without_user_gets_sudo(tmp_path):
    assert inventory.resolve_host(load("", tmp_path), "web1").target == Target("web1", None, sudo=True)
    assert inventory.resolve_host(load("", tmp_path), "web1", target_host="root@web1").target.sudo is False


def test_unsplittable_environment_options(tmp_path):
    with pytest.raises(InventoryError, match="NIXTASKS_SSH_OPTIONS: cannot split"):
        load("", tmp_path, env={"NIXTASKS_SSH_OPTIONS": "-o 'unbalanced"})


def test_non_utf8_inventory_is_one_line(tmp_path):
    (tmp_path / "nixtasks.toml").write_bytes(b"[hosts.web1]\ntarget = \"\xff\"\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        inventory.load(env={}, cwd=tmp_path)


def test_a_host_name_with_a_newline_at_its_end_is_refused():
    """A `$` in a regular expression also matches before a final newline: names are matched whole."""
    with pytest.raises(UsageError, match="is not a valid host name"):
        inventory.check_host_name("web1\n")
