"""The lab's two hosts with a job, known by their names, and the hosts that use them.

`cache` serves a Nix binary cache with nginx (from the base image, enabled in its layer only):
GET for everyone in the lab, PUT (what `nix copy --to http://...` sends) only from the deployer,
the lab's gateway; any other write is refused (403). `up --cache` gives hosts that cache as their
substituter and the lab's public key in /etc/nix/nix.conf (`require-sigs`); `--untrusted` gives
them the substituter but another key, so the cache's paths are refused there. `builder` is a host
the deployer hands builds to (`builders`, over ssh as root, whom its Nix trusts).

The signing key pair lives in the lab's state directory on this machine (the secret mode 0600,
in a 0700 directory); only the public key reaches a host, in its nix.conf.
"""

from __future__ import annotations

import argparse
import os
import shlex
import urllib.request
from pathlib import Path

from nixlab import config
from nixlab.inside import exec_in, supervisor_alive
from nixlab.proc import LabError, log, run
from nixlab.registry import Registry, address

CACHE_HOST = "cache"
BUILDER_HOST = "builder"
BUILDER_JOBS = 2
CACHE_ROOT = "/srv/nix-cache"  # on the cache host: nix-cache-info, *.narinfo, nar/
KEY_DIR = config.STATE / "cache"
SECRET_KEY = KEY_DIR / "secret-key"
PUBLIC_KEY = KEY_DIR / "public-key"
# The key an `--untrusted` host trusts instead of the cache's (its secret is thrown away).
OTHER_PUBLIC_KEY = KEY_DIR / "other-public-key"
KEY_NAME = f"lab-cache-{config.LAB_ID}-1"
OTHER_KEY_NAME = f"lab-other-{config.LAB_ID}-1"
TRUSTED, UNTRUSTED = "trusted", "untrusted"


def add_arguments(up: argparse.ArgumentParser) -> None:
    up.add_argument("--cache", action="store_true",
                    help=f"the HOSTs (booted now or already up) substitute from the `{CACHE_HOST}` host's binary "
                    "cache and trust its key (require-sigs); boot it first or in the same command")
    up.add_argument("--untrusted", action="store_true",
                    help="with --cache: the HOSTs trust another key instead, so they refuse the cache's paths")


def cache_info() -> str:
    """The cache's nix-cache-info: a lower priority number than cache.nixos.org's 40 wins."""
    return "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"


def nginx_site(writers: list[str]) -> str:
    """The cache host's one nginx site: files under CACHE_ROOT for GET and HEAD from anyone, PUT
    (creating nar/ as needed) from the `writers` alone, 403 for any other write."""
    allow = "".join(f"            allow {writer};\n" for writer in writers)
    return (
        "server {\n"
        "    listen 80 default_server;\n"
        f"    root {CACHE_ROOT};\n"
        "    client_max_body_size 0;\n"
        "    location / {\n"
        "        dav_methods PUT;\n"
        "        create_full_put_path on;\n"
        "        dav_access user:rw group:r all:r;\n"
        "        limit_except GET {\n"  # GET allows HEAD too
        f"{allow}"
        "            deny all;\n"
        "        }\n"
        "    }\n"
        "}\n"
    )


def client_nix_conf(image_conf: str, url: str, public_key: str) -> str:
    """A host's nix.conf with the cache as its only substituter and one trusted key. The image's
    `substituters =` line gives way; a cache that does not answer costs at most 5 s a try."""
    lines = [line for line in image_conf.splitlines() if not line.startswith("substituters")]
    return "\n".join([*lines, f"substituters = {url}", f"trusted-public-keys = {public_key}",
                      "require-sigs = true", "connect-timeout = 5", ""])


def writers(reg: Registry) -> list[str]:
    """Who may PUT: this machine (the gateway), and the deployer hosts (`up --deployer`)."""
    return [config.GATEWAY, *(address(reg, h) for h in sorted(reg.get("deployers", {})) if h in reg["hosts"])]


def cache_url(reg: Registry) -> str | None:
    return f"http://{address(reg, CACHE_HOST)}" if CACHE_HOST in reg["hosts"] else None


def builders_line(reg: Registry) -> str | None:
    """The `builders` entry for the builder host: `-` for the ssh key, as NIX_SSHOPTS (`-F` the
    lab's ssh config) names the key, the user (root) and the host key."""
    return f"ssh://{BUILDER_HOST} x86_64-linux - {BUILDER_JOBS}" if BUILDER_HOST in reg["hosts"] else None


def ensure_keys() -> None:
    """The lab's signing key pair (once per lab; `down` removes it with the state directory)."""
    KEY_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(KEY_DIR, 0o700)
    if not SECRET_KEY.exists():
        run("nix-store", "--generate-binary-cache-key", KEY_NAME, str(SECRET_KEY), str(PUBLIC_KEY))
        os.chmod(SECRET_KEY, 0o600)
    if not OTHER_PUBLIC_KEY.exists():
        thrown = KEY_DIR / "other-secret-key"
        run("nix-store", "--generate-binary-cache-key", OTHER_KEY_NAME, str(thrown), str(OTHER_PUBLIC_KEY))
        thrown.unlink()


def public_key(trust: str = TRUSTED) -> str:
    return (PUBLIC_KEY if trust == TRUSTED else OTHER_PUBLIC_KEY).read_text().strip()


def take_flags(args: argparse.Namespace, reg: Registry, hosts: list[str], new: list[str]) -> list[str]:
    """Record in the registry which hosts substitute from the cache (checked before anything
    changes); returns the hosts already up whose nix.conf must change now."""
    if args.untrusted and not args.cache:
        raise LabError("--untrusted goes with --cache (a host that has the cache but trusts another key)")
    if args.cache and CACHE_HOST not in reg["hosts"] and CACHE_HOST not in hosts:
        raise LabError(f"--cache: the lab has no {CACHE_HOST} host; boot it first or in the same command "
                       f"(labctl up {CACHE_HOST} {' '.join(hosts)} --cache)")
    clients = reg.setdefault("cache_clients", {})
    if not args.cache:
        for host in new:  # a host booted without --cache keeps no substituter
            clients.pop(host, None)
        return []
    trust = UNTRUSTED if args.untrusted else TRUSTED
    changed = [h for h in hosts if h != CACHE_HOST and clients.get(h) != trust]
    clients.update({h: trust for h in hosts if h != CACHE_HOST})  # the cache host does not use itself
    return [h for h in changed if h not in new]


def seed_layer(reg: Registry, host: str, upper: Path, base: Path) -> None:
    """What a fresh writable layer of a host with a job, or of a cache client, gets before boot."""
    if host == CACHE_HOST:
        seed_cache_host(upper, base, writers(reg))
    trust = reg.get("cache_clients", {}).get(host)
    url = cache_url(reg)
    if trust and url:
        conf = upper / "etc/nix/nix.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(client_nix_conf((base / "etc/nix/nix.conf").read_text(), url, public_key(trust)))


def seed_cache_host(upper: Path, base: Path, allowed: list[str]) -> None:
    site = upper / "etc/nginx/sites-enabled/nix-cache"
    site.parent.mkdir(parents=True, exist_ok=True)
    site.write_text(nginx_site(allowed))
    wants = upper / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "nginx.service").symlink_to("/lib/systemd/system/nginx.service")
    www = next(line.split(":")[2:4] for line in (base / "etc/passwd").read_text().splitlines()
               if line.startswith("www-data:"))
    root = upper / CACHE_ROOT.lstrip("/")
    root.mkdir(parents=True)
    (root / "nix-cache-info").write_text(cache_info())
    for path in (root, root / "nix-cache-info"):  # nginx's workers (www-data) write the pushed files
        os.chown(path, int(www[0]), int(www[1]))
    for parent in (root.parent, site.parent.parent, site.parent):  # as in the image
        image_parent = base / parent.relative_to(upper)
        if image_parent.exists():
            st = image_parent.stat()
            os.chown(parent, st.st_uid, st.st_gid)
            os.chmod(parent, st.st_mode & 0o7777)


def configure_running(reg: Registry, hosts: list[str]) -> None:
    """`up --cache` on hosts already up: their nix.conf now, and their nix-daemon restarted to
    read it (root's nix, without the daemon, reads it at every command)."""
    url = cache_url(reg)
    if not hosts or url is None:
        return
    ensure_keys()
    for host in hosts:
        base = Path(reg["images"][host])
        conf = client_nix_conf((base / "etc/nix/nix.conf").read_text(), url, public_key(reg["cache_clients"][host]))
        proc = exec_in(host, ["sh", "-c", "cat > /etc/nix/nix.conf && systemctl try-restart nix-daemon.service"],
                       capture=True, timeout=30, input=conf)
        if proc.returncode != 0:
            raise LabError(f"{host}: could not write its nix.conf: {proc.stderr.strip()}")
        log(f"{host} substitutes from {url} ({reg['cache_clients'][host]})")


def allow_new_deployers(reg: Registry, new: list[str]) -> None:
    """Deployer hosts booted while the cache runs may PUT too: its site rewritten, nginx reloaded."""
    if CACHE_HOST in new or not any(h in reg.get("deployers", {}) for h in new):
        return
    if CACHE_HOST not in reg["hosts"] or not supervisor_alive(CACHE_HOST):
        return
    proc = exec_in(CACHE_HOST, ["sh", "-c", "cat > /etc/nginx/sites-enabled/nix-cache && systemctl reload nginx"],
                   capture=True, timeout=30, input=nginx_site(writers(reg)))
    if proc.returncode != 0:
        raise LabError(f"{CACHE_HOST}: could not let the new deployers write: {proc.stderr.strip()}")


def check_cache_serves(reg: Registry) -> None:
    """After the cache host boots: its nix-cache-info answers here, or the boot failed."""
    url = cache_url(reg)
    if url is None:
        return
    try:
        with urllib.request.urlopen(f"{url}/nix-cache-info", timeout=10) as reply:
            body = reply.read().decode()
    except OSError as exc:
        raise LabError(f"{CACHE_HOST}: nginx does not serve {url}/nix-cache-info ({exc}); "
                       f"see labctl exec {CACHE_HOST} -- journalctl -u nginx") from exc
    if "StoreDir: /nix/store" not in body:
        raise LabError(f"{CACHE_HOST}: {url}/nix-cache-info is not a Nix cache's: {body[:80]!r}")


def env_lines(reg: Registry) -> list[str]:
    """The cache's and the builder's lines of `labctl env` (none when the lab has neither)."""
    lines = []
    url = cache_url(reg)
    if url and SECRET_KEY.exists():
        lines += [f"export NIXTASKS_LAB_CACHE_PUSH={url}", f"export NIXTASKS_LAB_CACHE_URL={url}",
                  f"export NIXTASKS_LAB_CACHE_PUBLIC_KEY={shlex.quote(public_key())}",
                  f"export NIXTASKS_LAB_CACHE_SECRET_KEY_FILE={SECRET_KEY}"]
    builders = builders_line(reg)
    if builders:
        lines.append(f"export NIXTASKS_LAB_BUILDERS={shlex.quote(builders)}")
    return lines
