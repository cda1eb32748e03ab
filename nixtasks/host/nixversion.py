"""Which Nix a machine runs, and what of the Nix command line nixtasks relies on that an older
Nix lacks. Pure.

Tested: Nix 2.8 on the deployer and on hosts, and Nix 2.26 on hosts (the lab's mixed fleet).
What differs between those two is handled where it is parsed (`space.nar_sizes` reads both shapes
of `nix path-info --json`); what an older Nix cannot do at all is listed here for the doctor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, int, int]
VERSION = re.compile(r"\bnix \(Nix\) (\d+)\.(\d+)(?:\.(\d+))?")
# `nix config show` replaced `nix show-config` in 2.20, which since warns on every call.
CONFIG_SHOW = (2, 20, 0)


def parse(text: str) -> Version | None:
    """`nix (Nix) 2.26.3` -> (2, 26, 3); None when it is not Nix's --version line."""
    match = VERSION.search(text)
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else None


def text(version: Version) -> str:
    """(2, 8, 0) -> "2.8.0"; a release as Nix names it, (2, 4, 0) -> "2.4", with `short`."""
    return ".".join(str(v) for v in version)


def short(version: Version) -> str:
    return text(version).removesuffix(".0")


@dataclass(frozen=True)
class Feature:
    since: Version
    what: str  # what nixtasks runs
    needed_for: str  # what breaks without it
    fatal: bool = False  # nothing works without it (else the doctor warns)


# Nix 2.4 brought the `nix` commands nixtasks runs as they are spelled now, and flakes.
# On the hosts nixtasks deploys to (and builds on):
HOST_FEATURES = (
    Feature((2, 4, 0), "`nix --extra-experimental-features nix-command`",
            "`nix path-info` on a build host (the disk-space check) and the doctor's trust check"),
    Feature((2, 4, 0), "`nix store diff-closures`", "the closure diff in the plan"),
)
# On the deployer, which evaluates the flake:
DEPLOYER_FEATURES = (
    Feature((2, 4, 0), "flakes (`nix eval FLAKE#nixosConfigurations`)", "evaluating and building the systems",
            fatal=True),
)


def missing(version: Version, features: tuple[Feature, ...]) -> list[Feature]:
    return [f for f in features if version < f.since]


def config_show(version: Version | None) -> tuple[str, ...]:
    """The Nix settings as `name = value` lines, without a deprecation warning on either side of 2.20."""
    sub = ("config", "show") if version is not None and version >= CONFIG_SHOW else ("show-config",)
    return ("nix", "--extra-experimental-features", "nix-command", *sub)
