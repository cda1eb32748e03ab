"""The CI workflow nixtasks writes: every host's system built on push and pull request, the
way nixtasks builds it; never a deploy (deploying stays a manual, approved step). Pure."""

from __future__ import annotations

import json
from collections.abc import Sequence

PATH = ".github/workflows/nixtasks-build.yml"


def build_command(config: str, flake: str = ".") -> str:
    """What the workflow runs for one host, from the repository's top (`flake` is the flake's
    directory relative to it); tests run the same text."""
    return (f'nix build --no-link --print-build-logs '
            f'"{flake}#nixosConfigurations.\\"{config}\\".config.system.build.toplevel"')


def workflow(configs: Sequence[str], flake: str = ".") -> str:
    hosts = json.dumps(list(configs))
    command = build_command("${{ matrix.host }}", flake)
    return f"""# Written by `nixtasks ci-workflow`. It builds every host's NixOS system on each push and pull
# request, and never deploys: deploying stays a manual, approved step (`make fleet/switch`).
name: nixtasks build
"on":
  push:
  pull_request:
permissions:
  contents: read
jobs:
  build:
    runs-on: ubuntu-latest
    strategy:
      fail-fast: false
      matrix:
        host: {hosts}
    steps:
      - uses: actions/checkout@v4
      - uses: cachix/install-nix-action@v27
        with:
          extra_nix_config: "experimental-features = nix-command flakes"
      - name: build ${{{{ matrix.host }}}}
        run: {json.dumps(command)}
"""
