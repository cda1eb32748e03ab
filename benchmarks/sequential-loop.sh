#!/usr/bin/env bash
# The baseline: what a user's "deploy to several hosts" script does today, the primitives
# nixos-rebuild runs per host, one host after another, each host with its own ssh
# ControlMaster (as nixos-rebuild sets it up):
#   evaluate and build, nix copy, nix-env --set, switch-to-configuration switch.
# usage: benchmarks/sequential-loop.sh FLAKE_DIR SSH_CONFIG HOST...
set -euo pipefail
flake=$1 ssh_config=$2
shift 2
control=$(mktemp -d /tmp/loop-XXXXXX)
trap 'for h in "$@"; do ssh -F "$ssh_config" -o ControlPath="$control/%C" -O exit "root@$h" 2>/dev/null || true; done; rm -rf "$control"' EXIT
opts=(-F "$ssh_config" -o ControlMaster=auto -o "ControlPath=$control/%C" -o ControlPersist=60)
for host in "$@"; do
  out=$(nix --extra-experimental-features 'nix-command flakes' build --json --no-link --option substituters '' \
    "$flake#nixosConfigurations.\"$host\".config.system.build.toplevel" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["outputs"]["out"])')
  NIX_SSHOPTS="${opts[*]}" nix --extra-experimental-features nix-command copy --to "ssh://root@$host" "$out"
  ssh "${opts[@]}" "root@$host" nix-env -p /nix/var/nix/profiles/system --set "$out"
  ssh "${opts[@]}" "root@$host" "$out/bin/switch-to-configuration" switch
done
