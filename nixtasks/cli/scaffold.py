"""Adopting nixtasks in a flake repository: `init` and `ci-workflow` write files, never
overwriting one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import inventory
from ..errors import NixtasksError, UsageError
from ..host import commands, gitstate
from ..host.runner import Runner, ShRunner
from ..models import LOCAL
from .output import echo


def flake_configurations(runner: Runner, flake: str = ".") -> list[str]:
    result = runner.run(commands.nix_eval_config_names(str(Path(flake).resolve())), LOCAL, label="eval",
                        stream=True, echo_stdout=False)
    try:
        names = json.loads(result.stdout or "[]")
    except ValueError as exc:
        raise NixtasksError(f"the flake's nixosConfigurations could not be listed: {result.stdout[:100]!r}") from exc
    usable = [n for n in names if isinstance(n, str) and inventory.HOST_NAME.fullmatch(n)]
    if len(usable) < len(names):
        echo(f"warning: left out (not a host name nixtasks accepts): {', '.join(map(str, set(names) - set(usable)))}")
    return usable


def write_new(path: Path, text: str) -> bool:
    """Write a file that does not exist yet; never overwrite one."""
    if path.exists():
        echo(f"kept {path} (it exists; nixtasks never overwrites a file)")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    echo(f"wrote {path}")
    return True


def inventory_text(names: list[str]) -> str:
    hosts = "".join(f'\n[hosts.{json.dumps(n) if "." in n else n}]\ntarget = "{n}"  # [user@]address to ssh to\n'
                    for n in names)
    return ('# nixtasks inventory: every key is in docs/inventory.md of nixtasks (https://pypi.org/project/nixtasks/)\n'
            '[defaults]\nflake = "."\n# ssh_user = "deploy"   # non-root users get `sudo -n` for the steps that need '
            'root\n# checks = [ { http = "http://{address}/health" }, { unit = "sshd.service" } ]\n' + hosts)


def run_init() -> None:
    """tasks.py, the thin Makefile and nixtasks.toml for the flake repository here."""
    from importlib.resources import files

    if not Path("flake.nix").is_file():
        raise UsageError("no flake.nix here: run `nixtasks init` at the top of your flake repository")
    with ShRunner(echo=echo) as runner:
        names = flake_configurations(runner)
    write_new(Path("tasks.py"), "# nixtasks' tasks: `invoke --list` shows them.\n"
                                "from nixtasks.tasks import ns  # noqa: F401\n")
    write_new(Path("Makefile"), files("nixtasks.cli").joinpath("user.mk").read_text())
    write_new(Path("nixtasks.toml"), inventory_text(names))
    echo(f"hosts from the flake's nixosConfigurations: {', '.join(names) or 'none'}")
    echo("next: set each host's target in nixtasks.toml, then `invoke doctor --all`, then a first "
         "`invoke build --all` (nothing is activated without your approval)")


def run_ci_workflow(path: str | None) -> None:
    """A GitHub Actions workflow that builds every host's system on push and pull request. It
    goes to the repository's top (GitHub reads workflows only there), building the flake in
    its directory."""
    from ..actions import ci

    if not Path("flake.nix").is_file():
        raise UsageError("no flake.nix here: run it in your flake's directory")
    with ShRunner(echo=echo) as runner:
        names = flake_configurations(runner)
        top = gitstate.toplevel(runner, str(Path.cwd()))
    if not names:
        raise UsageError("the flake has no nixosConfigurations to build")
    rel = os.path.relpath(Path.cwd(), top) if top else "."
    target = Path(path) if path else Path(top or ".") / ci.PATH
    if write_new(target, ci.workflow(names, "." if rel == "." else f"./{rel}")):
        echo("it builds every host on push and pull request (on x86_64 runners), and never deploys; commit it to "
             "turn it on")


