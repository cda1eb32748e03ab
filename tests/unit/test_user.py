"""What a new user meets: the secrets guard, the CI workflow, the `nixtasks` command's
errors, and generations in nixos-rebuild's JSON shape."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nixtasks.actions import ci, secrets
from nixtasks.host import generations
from nixtasks.host.runner import ShRunner

# Built at run time, so that this file itself holds no key-shaped line: the secrets guard passes
# this repository (the demo inventory at its top deploys examples/fleet from it).
KEY = "\n".join(["-----BEGIN OPENSSH " + "PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAA",
                  "-----END OPENSSH " + "PRIVATE KEY-----", ""])


def test_plaintext_secrets_are_found_with_file_and_line():
    found = secrets.scan_text("keys/host.key", "# a key\n" + KEY)
    assert found == [secrets.Finding("keys/host.key", 2, "a private key")]
    age = "AGE-SECRET-KEY-1" + "Q" * 58
    assert secrets.scan_text("k.txt", age)[0].what == "an age secret key"
    nix = 'users.users.alice.password = "hunter2";\nusers.users.bob.hashedPassword = "$6$abc";\n'
    assert [(f.line, f.what.split(" (")[0]) for f in secrets.scan_text("configuration.nix", nix)] == [
        (1, "a cleartext password")]
    assert secrets.scan_text("notes.md", 'password = "x";') == []  # only Nix files


def test_encrypted_files_are_fine():
    assert secrets.scan_text("s.age", "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n") == []
    sops = "db: ENC[" + "AES256_GCM,data:abc]\nsops:\n    mac: x\n"  # built: this file is scanned, not skipped
    assert secrets.scan_text("secrets.yaml", sops) == []


def test_the_guard_reads_only_tracked_files_and_honours_allowed_ones(tmp_path: Path):
    (tmp_path / "host.key").write_text(KEY)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "other.key").write_text(KEY)
    assert [f.path for f in secrets.scan(tmp_path, ["host.key", "dir/other.key"], ())] == ["host.key", "dir/other.key"]
    assert secrets.scan(tmp_path, ["host.key", "dir/other.key"], ("host.key", "dir/")) == []
    assert secrets.scan(tmp_path, ["missing.key"], ()) == []


def test_this_checkout_passes_its_own_secrets_guard():
    """The demo inventory at the checkout's top deploys examples/fleet, and Nix copies every
    tracked file of the repository: none may look like a secret (test fixtures build theirs)."""
    top = Path(__file__).resolve().parents[2]
    if not (top / ".git").exists():
        pytest.skip("not a git checkout")
    with ShRunner() as runner:
        assert secrets.tracked_files(str(top), runner)  # the guard below reads them
        secrets.guard(str(top / "examples" / "fleet"), (), runner)


def test_the_ci_workflow_is_valid_yaml_that_builds_every_host_and_never_deploys():
    data = yaml.safe_load(ci.workflow(["web1", "db1"]))
    assert set(data["on"]) == {"push", "pull_request"}
    job = data["jobs"]["build"]
    assert job["strategy"]["matrix"]["host"] == ["web1", "db1"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs == [ci.build_command("${{ matrix.host }}")]
    assert not any(word in runs[0] for word in ("switch", "deploy", "invoke", "ssh"))


def test_the_nixtasks_command_gives_one_error_line_and_exit_2_for_bad_arguments(tmp_path: Path):
    for argv in (["switch", "--bogus"], ["rollback", "--host", "web1", "--generation", "abc"],
                 ["gc", "--keep", "many"], ["switch", "--host", "web1", "--cache"],
                 ["switch", "--host", "web1", "--cache-only", "--no-cache"]):
        proc = subprocess.run([sys.executable, "-c", "from nixtasks.cli.program import main; main()", *argv],
                              cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_generations_json_has_nixos_rebuilds_fields():
    listed = "   1   2026-11-01 10:00:00   \n   2   2026-11-02 11:00:00   (current)\n"
    details = ("gen\t1\t/nix/store/a-s\t24.05\tabc\t/nix/store/k/bzImage\t6.6.30\t\n"
               "gen\t2\t/nix/store/b-s\t24.11\tdef\t/nix/store/k/bzImage\t6.6.31\tlow-power vm\n"
               "running\t/nix/store/b-s\n")
    found = generations.parse(listed, details)
    newest = found.generations[0].as_json()
    assert {k: newest[k] for k in ("generation", "date", "nixosVersion", "kernelVersion", "configurationRevision",
                                   "specialisations", "current")} == {
        "generation": 2, "date": "2026-11-02 11:00:00", "nixosVersion": "24.11", "kernelVersion": "6.6.31",
        "configurationRevision": "def", "specialisations": ["low-power", "vm"], "current": True}
    assert found.generations[1].as_json()["current"] is False


@pytest.mark.parametrize("spec", ["1e9", "-3"])
def test_keep_must_be_a_positive_whole_number(spec):
    from nixtasks.cli import options
    from nixtasks.errors import UsageError

    with pytest.raises(UsageError):
        options.number(spec, "--keep", 1)


def test_wireguard_and_nix_signing_keys_are_secrets_but_public_keys_are_not():
    wireguard = 'networking.wireguard.interfaces.wg0.privateKey = "' + "A" * 42 + 'E=";'
    assert secrets.scan_text("wg.nix", wireguard)[0].what.startswith("a WireGuard private key")
    signing = "cache.example.org-1:" + "B" * 86 + "=="
    assert secrets.scan_text("keys.txt", signing)[0].what == "a Nix signing key"
    public = "cache.example.org-1:" + "C" * 43 + "="
    assert secrets.scan_text("flake.nix", f'trusted-public-keys = [ "{public}" ];') == []


def test_a_symlink_to_a_key_is_not_what_the_store_gets(tmp_path: Path):
    (tmp_path / "real.key").write_text(KEY)
    (tmp_path / "link.key").symlink_to(tmp_path / "real.key")
    assert [f.path for f in secrets.scan(tmp_path, ["link.key", "real.key"], ())] == ["real.key"]


def test_init_quotes_host_names_with_dots_so_the_inventory_loads(tmp_path: Path):
    from nixtasks import inventory
    from nixtasks.cli import scaffold

    (tmp_path / "nixtasks.toml").write_text(scaffold.inventory_text(["db.prod", "web1"]))
    loaded = inventory.load(env={}, cwd=tmp_path)
    assert sorted(loaded.hosts) == ["db.prod", "web1"] and loaded.hosts["db.prod"].target == "db.prod"


def test_the_workflow_builds_a_flake_in_a_subdirectory_from_the_top():
    assert ci.build_command("web1", "./infra").startswith('nix build --no-link --print-build-logs "./infra#')


def user_make(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The thin Makefile users get, with `echo` standing in for invoke: what it would run."""
    makefile = Path(__file__).resolve().parents[2] / "nixtasks" / "cli" / "user.mk"
    clean = {k: v for k, v in os.environ.items() if k not in ("HOSTS", "TAG", "MAKEFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "-s", "-f", str(makefile), "INVOKE=echo invoke", *args], cwd=tmp_path, text=True,
                          capture_output=True, env={**clean, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, env, message", [
    (("switch", "HOSTS="), {}, "error: HOSTS= is empty; give host names like HOSTS=web1,web2, or leave HOSTS out "
                               "to act on this machine"),
    (("switch",), {"HOSTS": ""}, "error: HOSTS= is empty"),  # a CI job's empty variable
    (("build", "HOSTS= "), {}, "error: HOSTS= is empty"),
    (("switch", "TAG="), {}, "error: TAG= is empty; give a tag like TAG=web"),
    (("rolling", "HOSTS=web1", "TAG="), {}, "error: TAG= is empty; give a tag like TAG=web, or leave TAG out"),
    (("stage", "HOSTS="), {}, "error: HOSTS= is empty"),
    (("host/web1/switch", "HOSTS="), {}, "error: HOSTS= is empty"),
    (("host//switch",), {}, "error: make host//switch names no host; name one like make host/web1/switch, or run "
                            "make switch to act on this machine"),
    (("tag//switch",), {}, "error: make tag//switch names no tag; name one like make tag/web/switch"),
    (("host/web1/",), {}, "error: make host/web1/ names no action; e.g. make host/web1/switch"),
    (("host/switch",), {}, "error: make host/switch: give a host and an action, like make host/web1/switch"),
])
def test_make_refuses_an_empty_selection_before_invoke_runs(tmp_path: Path, args, env, message):
    if shutil.which("make") is None:
        pytest.skip("no make")
    proc = user_make(tmp_path, *args, env=env)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and errors[0].startswith(message), proc.stderr
    assert proc.stdout == ""  # invoke never ran


@pytest.mark.parametrize("args, ran", [
    (("switch",), "invoke switch"),
    (("switch", "HOSTS=web1,web2"), "invoke switch --host 'web1,web2'"),
    (("host/web1/build",), "invoke 'build' --host 'web1'"),
    (("tag/web/switch",), "invoke 'switch' --tag 'web'"),
    (("fleet/build", "HOSTS=web1"), "invoke 'build' --all --host 'web1'"),  # invoke refuses the conflict
    (("rolling", "TAG=web"), "invoke rolling --tag 'web'"),
])
def test_make_passes_a_selection_to_invoke(tmp_path: Path, args, ran):
    if shutil.which("make") is None:
        pytest.skip("no make")
    proc = user_make(tmp_path, *args)
    assert proc.returncode == 0 and proc.stdout.split() == ran.replace("'", "").split(), proc.stderr


def test_make_emergency_passes_follow(tmp_path):
    """It could only follow the journals for the default 60 s (a blocking wait with YES=1)."""
    made = user_make(tmp_path, "emergency", "HOSTS=web1", "FOLLOW=0", "REASON=fix")
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == ["invoke", "emergency", "--host", "web1", "--follow", "0"]
    assert user_make(tmp_path, "emergency", "HOSTS=web1").stdout.split() == ["invoke", "emergency", "--host", "web1"]
