from pathlib import Path

import pytest

from nixtasks import inventory
from nixtasks.cli import options, session, tasks
from nixtasks.errors import UsageError
from nixtasks.host.runner import ShRunner
from nixtasks.inventory import parse_sizes


def test_target_host_needs_a_host(tmp_path: Path):
    inv = inventory.load(env={}, cwd=tmp_path)
    with ShRunner() as runner, pytest.raises(UsageError, match="--target-host needs --host"):
        session.resolve_hosts(inv, options.Options(target_host="root@web9"), runner)


def test_ssh_options_with_spaces_are_refused():
    with pytest.raises(UsageError, match="contains a space"):
        ShRunner(ssh_extra=("-o", "ProxyCommand=ssh -W %h:%p bastion"))


def test_host_lists_and_reasons():
    assert options.split_hosts(("web1,web2", "db1", "web1")) == ("web1", "web2", "db1")
    with pytest.raises(UsageError, match="control characters"):
        options.check_reason("two\nlines")


def fleet_inventory(tmp_path: Path) -> inventory.Inventory:
    (tmp_path / "nixtasks.toml").write_text('[hosts.web1]\ntags = ["web"]\n[hosts.db1]\ntags = ["db"]\n')
    return inventory.load(env={}, cwd=tmp_path)


@pytest.mark.parametrize("opts, message", [
    (options.Options(hosts=("",)), "--host '' names no host; give --host NAME (hosts in nixtasks.toml: web1, db1), or, "
                               "to act on this machine, leave out --host"),
    (options.Options(hosts=(" , ",)), "--host ' , ' names no host"),
    (options.Options(hosts=("web1", "")), "--host '' names no host"),
    (options.Options(hosts=("web1,,db1",)), "--host 'web1,,db1' has an empty name in its list"),
    (options.Options(tags=("",)), "--tag '' names no tag; give --tag NAME (tags in nixtasks.toml: db, web), or, to act "
                              "on this machine, leave out --tag"),
    (options.Options(all_hosts=True, hosts=("web1",)), "--all and --host web1 both select hosts"),
    (options.Options(all_hosts=True, tags=("web",)), "--all and --tag web both select hosts"),
    (options.Options(tags=("web",), target_host="root@10.0.0.1"),
     "--target-host root@10.0.0.1 deploys one configuration"),
    (options.Options(all_hosts=True, target_host="root@10.0.0.1"), "--target-host root@10.0.0.1 deploys one"),
])
def test_an_empty_or_contradictory_selection_is_refused(tmp_path: Path, opts: options.Options, message: str):
    inv = fleet_inventory(tmp_path)
    with ShRunner() as runner, pytest.raises(UsageError) as err:
        session.resolve_hosts(inv, opts, runner)  # refused before any command: no flake is needed here
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("argv, message", [
    (["invoke", "switch", "--host"], "--host needs a value"),
    (["invoke", "switch", "--host", "--yes"], "--host needs a value"),
    (["invoke", "status", "--tag", "--json"], "--tag needs a value"),
    (["invoke", "gc", "-h"], "-h needs a value: --host NAME"),
    (["nixtasks", "switch", "--host", "web1", "--tag"], "--tag needs a value"),
])
def test_a_bare_selection_flag_is_refused(argv: list[str], message: str):
    name = argv[1]
    with pytest.raises(UsageError) as err:
        tasks.check_flags_have_values(name, argv)
    assert str(err.value).startswith(message) and str(err.value).endswith("to act on this machine, leave out "
                                                                           f"--{'tag' if 'tag' in message else 'host'}")


def test_selection_flags_with_values_pass():
    for argv in (["invoke", "switch", "--host", "web1", "--yes"], ["invoke", "switch"], ["invoke", "status", "--all"],
                 ["invoke", "sudoers", "--user", "x"], ["invoke", "switch", "--host=", "--yes"]):
        tasks.check_flags_have_values(argv[1], argv)  # --host= is the empty value resolve_hosts refuses


@pytest.mark.parametrize("flag", ["--pause", "--confirm-timeout", "--copy-timeout", "--activation-timeout",
                                  "--max-fail-percentage", "--soak", "--follow"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e999"])
def test_numbers_that_are_not_finite_say_so(flag: str, value: str):
    with pytest.raises(UsageError) as err:
        options.number(value, flag, 1, whole=False)
    assert str(err.value).startswith(f"{flag}: {value} is not a finite number;") and "too small" not in str(err.value)


@pytest.mark.parametrize("flag", ["--parallel", "--keep", "--generation"])
def test_whole_numbers_refuse_inf_and_nan(flag: str):
    for value in ("inf", "nan"):
        with pytest.raises(UsageError, match=f"^{flag}: '{value}' is not a whole number"):
            options.number(value, flag, 1)


def test_batch_sizes_suggest_a_value_of_the_same_option():
    with pytest.raises(UsageError) as err:
        options.policy_flags(batch_size="0")
    assert "e.g. --batch-size 5" in str(err.value) and "--batches" not in str(err.value)
    for spec in ("1,,2", "1,", ",5"):
        with pytest.raises(UsageError, match="has an empty item"):
            options.policy_flags(batches=spec)
    assert options.policy_flags(batches="1, 5,20%").batches == parse_sizes("1,5,20%")


def test_an_inventory_batch_size_suggests_toml(tmp_path: Path):
    (tmp_path / "nixtasks.toml").write_text("[policy]\nbatch_size = 0\n")
    with pytest.raises(UsageError, match="e.g. batch_size = 5$"):
        inventory.load(env={}, cwd=tmp_path)


def test_a_long_inventory_is_summed_up_in_the_error(tmp_path: Path):
    (tmp_path / "nixtasks.toml").write_text("".join(f"[hosts.h{i}]\n" for i in range(20)))
    inv = inventory.load(env={}, cwd=tmp_path)
    with ShRunner() as runner, pytest.raises(UsageError, match=r"\(hosts in nixtasks.toml: h0, h1, .*, h7 and 12 "
                                                              r"more\), or, to act on this machine"):
        session.resolve_hosts(inv, options.Options(hosts=("",)), runner)


def test_builders_and_the_cache_from_the_inventory_and_the_command_line(tmp_path: Path):
    key = "c-1:" + "A" * 43 + "="
    (tmp_path / "nixtasks.toml").write_text(
        '[defaults]\nbuilders = ["ssh://b1 x86_64-linux - 4", "ssh://b2 x86_64-linux - 2"]\n'
        f'[cache]\npush = "s3://fleet?region=eu-west-1"\nurl = "https://cache.example.org"\npublic_key = "{key}"\n'
        'secret_key_file = "keys/cache"\n')
    inv = inventory.load(env={}, cwd=tmp_path)
    assert options.builders_option(inv, options.Options()) == (
        "--option", "builders", "ssh://b1 x86_64-linux - 4 ; ssh://b2 x86_64-linux - 2")
    assert options.builders_option(inv, options.Options(builders=("ssh://b3 aarch64-linux",)))[-1] == \
        "ssh://b3 aarch64-linux"
    with pytest.raises(UsageError, match="give one builder per option"):
        options.builders_option(inv, options.Options(builders=("ssh://a ; ssh://b",)))
    chosen = options.chosen_cache(inv, options.Options())
    assert chosen is not None and (chosen.push, chosen.url, chosen.only) == (
        "s3://fleet?region=eu-west-1", "https://cache.example.org", False)
    assert chosen.secret_key_file == str(tmp_path / "keys" / "cache")  # relative to the inventory
    assert options.chosen_cache(inv, options.Options(cache=False)) is None
    only = options.chosen_cache(inv, options.Options(cache=True, cache_only=True))
    assert only is not None and only.only
    bare = inventory.load(env={}, cwd=tmp_path / "keys" if (tmp_path / "keys").mkdir() is None else tmp_path)
    assert options.chosen_cache(bare, options.Options()) is None
    with pytest.raises(UsageError, match=r"--cache-only: \(no inventory\) has no \[cache\] table; add one"):
        options.chosen_cache(bare, options.Options(cache=True, cache_only=True))
    with pytest.raises(UsageError, match="give --cache or --no-cache, not both"):
        tasks.cache_choice(True, True, False)
