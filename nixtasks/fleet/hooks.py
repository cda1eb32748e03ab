"""The operator's own commands at a recipe's gates, run on the deployer: blue-green's
`switch_traffic`. Placeholders are filled with shell-quoted values."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from ..host import commands
from ..host.runner import Runner
from ..models import LOCAL


def fill(template: str, to: str, hosts: Sequence[str]) -> str:
    """`{to}` the group, `{hosts}` its hosts as separate words; each quoted for the shell."""
    return template.replace("{to}", shlex.quote(to)).replace("{hosts}", " ".join(shlex.quote(h) for h in hosts))


def switch_traffic(template: str, to: str, hosts: Sequence[str], runner: Runner) -> None:
    runner.run(commands.local_hook(fill(template, to, hosts)), LOCAL, label="switch_traffic", stream=True)
