from pathlib import Path

import pytest

from nixtasks import inventory
from nixtasks.cli import app
from nixtasks.errors import UsageError
from nixtasks.host.runner import ShRunner


def test_target_host_needs_a_host(tmp_path: Path):
    inv = inventory.load(env={}, cwd=tmp_path)
    with ShRunner() as runner, pytest.raises(UsageError, match="--target-host needs --host"):
        app.resolve_hosts(inv, app.Options(target_host="root@web9"), runner)


def test_ssh_options_with_spaces_are_refused():
    with pytest.raises(UsageError, match="contains a space"):
        ShRunner(ssh_extra=("-o", "ProxyCommand=ssh -W %h:%p bastion"))


def test_host_lists_and_reasons():
    assert app.split_hosts(("web1,web2", "db1", "web1")) == ("web1", "web2", "db1")
    with pytest.raises(UsageError, match="control characters"):
        app.check_reason("two\nlines")
