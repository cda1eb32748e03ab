"""The base images: Debian trees built once with debootstrap, configured from lab/image/, and
cached in the cache directory that every lab on this machine shares."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from nixlab import config
from nixlab.proc import LabError, log, run
from nixlab.registry import registry_path

IMAGE_DIR = config.LAB_DIR / "image"
PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,iproute2,sudo,python3,curl,libpam-systemd"
# debootstrap cannot configure nix-bin (it misses a virtual dependency), so
# these go in afterwards with apt-get inside the new tree. nginx (Debian's, with its dav module:
# about 3 MB with nginx-common) serves the `cache` host's binary cache; configure.sh disables it
# on every other host. Both lists key the cached debootstrap (packages_key): a change builds anew.
CHROOT_PACKAGES = ("nix-bin", "nix-setup-systemd", "git", "make", "nginx")


def debian_mirror() -> str:
    """The machine's own Debian mirror, from its apt sources."""
    sources = sorted(Path("/etc/apt").glob("sources.list*")) + sorted(
        Path("/etc/apt/sources.list.d").glob("*")
    )
    for path in sources:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            urls = [w for w in words if w.startswith("http")]
            if not urls or "security" in line:
                continue
            if (words[0] in ("deb", "URIs:")) and urls[0].rstrip("/").endswith("/debian"):
                return urls[0]
    return "http://deb.debian.org/debian"


def chroot_install(root: Path, packages: tuple[str, ...]) -> None:
    """apt-get install inside a bootstrapped tree, starting no services."""
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    run("mount", "--bind", "/proc", str(root / "proc"))
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run("chroot", str(root), "apt-get", "-f", "install", "-y", "-qq", env=env, stdout=subprocess.DEVNULL)
        run("chroot", str(root), "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages,
            env=env, stdout=subprocess.DEVNULL)
        run("chroot", str(root), "apt-get", "clean")
    finally:
        run("umount", str(root / "proc"))
        policy.unlink()
        (root / "etc/resolv.conf").unlink()


def packages_key(suite: str) -> str:
    # bookworm's key is the one from before there were two suites: its cached debootstrap stays valid.
    text = PACKAGES + " ".join(CHROOT_PACKAGES)
    return hashlib.sha256((text if suite == "bookworm" else f"{suite}:{text}").encode()).hexdigest()[:12]


def image_inputs_hash(suite: str) -> str:
    digest = hashlib.sha256(packages_key(suite).encode())
    for path in sorted(IMAGE_DIR.rglob("*")):
        if path.is_file():
            # Named from lab/ ("image/..."), as since the first labctl: cached images stay valid.
            digest.update(str(path.relative_to(config.LAB_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def bootstrap_dir(suite: str) -> Path:
    return config.CACHE / f"debootstrap-{packages_key(suite)}"


def base_dir(suite: str) -> Path:
    return config.CACHE / f"base-{suite}-{image_inputs_hash(suite)}"


def images_in_use() -> set[Path]:
    """Base images that a lab on this machine (any NIXTASKS_LAB_ID) has hosts on: an overlay's
    lower directory must not be deleted under a running host."""
    used: set[Path] = set()
    for registry in [*config.STATES.glob(f"{config.NAME}*/hosts.json"), registry_path()]:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            reg = json.loads(registry.read_text())
            used.update(Path(p) for p in reg.get("images", {}).values())
            if "image" in reg:  # a lab started by a labctl from before there were two suites
                used.add(Path(reg["image"]))
    return used


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """One builder at a time: two labs (or a test run beside `make demo`) share the cache, and
    two debootstraps into one directory break each other. The second waits, then finds it built."""
    config.CACHE.mkdir(parents=True, exist_ok=True)
    with open(config.CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_image(suite: str = config.DEFAULT_SUITE) -> Path:
    """Build (once) and return the configured base image directory of a Debian suite."""
    if suite not in config.SUITES:
        raise LabError(f"unknown suite {suite!r}: use one of {', '.join(config.SUITES)}")
    base = base_dir(suite)
    if (base / ".complete").exists():
        return base
    with cache_lock():
        if (base / ".complete").exists():
            return base
        return build_image(suite, base)


def build_image(suite: str, base: Path) -> Path:
    raw = bootstrap_dir(suite)
    if not (raw / ".complete").exists():
        if raw.exists():
            shutil.rmtree(raw)
        config.CACHE.mkdir(parents=True, exist_ok=True)
        mirror = debian_mirror()
        log(f"building the {suite} base image with debootstrap from {mirror} (a few minutes, once)")
        started = time.monotonic()
        run("debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, str(raw), mirror,
            stdout=subprocess.DEVNULL)
        chroot_install(raw, CHROOT_PACKAGES)
        (raw / ".complete").touch()
        log(f"debootstrap took {time.monotonic() - started:.0f} s")
    staging = base.with_name(base.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    run("cp", "-a", "--reflink=auto", str(raw), str(staging))
    (staging / ".complete").unlink()
    # --remove-destination: Debian 13's /etc/default/locale is a link to /etc/locale.conf, not there yet.
    run("cp", "-a", "--no-preserve=ownership", "--remove-destination", f"{IMAGE_DIR / 'rootfs'}/.", str(staging))
    shutil.copy(IMAGE_DIR / "configure.sh", staging / "configure.sh")
    run("chroot", str(staging), "/bin/sh", "/configure.sh", stdout=subprocess.DEVNULL)
    (staging / "configure.sh").unlink()
    staging.rename(base)
    (base / ".complete").touch()
    in_use = images_in_use()
    # Older images of this suite, and bookworm's from before images were named by suite (base-HASH).
    stale = list(config.CACHE.glob(f"base-{suite}-*"))
    if suite == "bookworm":
        stale += [p for p in config.CACHE.glob("base-*") if re.fullmatch(r"base-[0-9a-f]{12}", p.name)]
    for old in stale:
        if old != base and old.is_dir() and not old.name.endswith(".tmp") and old not in in_use:
            shutil.rmtree(old, ignore_errors=True)
    log(f"base image ready: {base}")
    return base
