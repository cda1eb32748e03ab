# Builds the NixOS-shaped toplevel of one host from its hosts.json knobs.
#
#   import ./system { system, site, revision, defaults } hostName hostSettings
#
# Closure (three store paths, so `nix store diff-closures` has something to say):
#   nixos-system-<host>-<release>   the toplevel (units, stc, nixos-version)
#   nixtasks-webapp-<release>       the HTTP service, shared by all hosts
#   nixtasks-web-<host>.json        the service's per-host settings
#   nixtasks-shared-<release>-<N>k  with shared_payload_kib = N > 0: N KiB that every host of
#                                   the release shares, as after a nixpkgs update
#
# Every derivation runs /bin/sh with coreutils only (no nixpkgs), so it builds
# the same on the deployer and on a lab host; the shared payload's bytes come
# from the machine's python3 (Debian's, on the deployer and every lab host).
{ system, site, revision, defaults }:

hostName: hostSettings:

let
  # The knobs and their defaults; hosts.json "defaults", then the host's own
  # entry, override these.
  knobDefaults = {
    release = "1.0"; # shown by the web service and by nixos-version
    healthy = true; # false: GET /health answers 500
    fail_activation = false; # an activation snippet fails (stc exits 2)
    fail_boot_entry = false; # installing the boot entry fails (stc switch and boot exit 1)
    failed_units = [ ]; # extra units that fail when started (stc exits 4)
    break_network = false; # activation sets the lab link down (up otherwise)
    activation_seconds = 0; # activation sleeps this long
    payload_kib = 0; # a file of this many KiB of random bytes: a copy that takes a while
    shared_payload_kib = 0; # one store path of this many KiB, the same for every host of a release
    build_seconds = 0; # the system's build sleeps this long (a build to interrupt)
    fail_build = false; # the system's build fails (exit 1)
  };

  knobTypes = {
    release = "string";
    healthy = "bool";
    fail_activation = "bool";
    fail_boot_entry = "bool";
    failed_units = "list";
    break_network = "bool";
    activation_seconds = "int";
    payload_kib = "int";
    shared_payload_kib = "int";
    build_seconds = "int";
    fail_build = "bool";
  };

  # Strict (foldl'), so a typo in hosts.json fails the build instead of
  # being silently ignored.
  checkKnobs = where: attrs:
    builtins.foldl'
      (ok: k:
        let v = attrs.${k}; in
        if !(knobTypes ? ${k}) then
          throw "${where}: unknown knob '${k}' (known: ${toString (builtins.attrNames knobTypes)})"
        else if builtins.typeOf v != knobTypes.${k} then
          throw "${where}: knob '${k}' must be a ${knobTypes.${k}}, not a ${builtins.typeOf v}"
        else ok)
      attrs
      (builtins.attrNames attrs);

  knobs = knobDefaults
    // checkKnobs "hosts.json defaults" defaults
    // checkKnobs "hosts.json hosts.${hostName}" hostSettings;

  # Values end up in file names, unit files and shell scripts: keep them tame.
  safe = what: re: v:
    if builtins.match re v != null then v
    else throw "${hostName}: ${what} '${v}' must match ${re}";

  release = safe "release" "[A-Za-z0-9][A-Za-z0-9._+~-]*" knobs.release;
  host = safe "host name" "[a-z0-9][a-z0-9-]*" hostName;
  rev = safe "revision" "[A-Za-z0-9]+" revision;

  failedUnitNames = map
    (u:
      let n = safe "failed_units entry" "[A-Za-z0-9][A-Za-z0-9_.-]*" u;
      in if builtins.match ".*\\.service" n != null then n else "${n}.service")
    knobs.failed_units;

  shBuild = name: attrs: script: derivation ({
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" "set -eu\n${script}" ];
    PATH = "/usr/bin:/bin";
  } // attrs);

  webapp = shBuild "nixtasks-webapp-${release}" { src = ./webapp.py; inherit release; } ''
    mkdir -p "$out/bin" "$out/share/nixtasks-webapp"
    cp "$src" "$out/bin/nixtasks-webapp"
    chmod 0555 "$out/bin/nixtasks-webapp"
    printf '%s' "$release" > "$out/share/nixtasks-webapp/release"
  '';

  # One derivation for every host of a release: its inputs are the release and the size only, so
  # every host's system refers to the same path. Its bytes are a seeded stream (SHAKE-256 of the
  # release, the size and a counter): the same on every build, and not compressible, so that a
  # cache's .nar.xz is as big as the payload.
  sharedPayload = shBuild "nixtasks-shared-${release}-${toString knobs.shared_payload_kib}k"
    { inherit release; kib = toString knobs.shared_payload_kib; } ''
      /usr/bin/python3 -c '
      import hashlib, os, sys
      kib = int(os.environ["kib"])
      seed = ("nixtasks-shared %s %d " % (os.environ["release"], kib)).encode()
      with open(os.environ["out"], "wb") as out:
          for mib in range(0, kib, 1024):
              out.write(hashlib.shake_256(seed + str(mib).encode()).digest(1024 * min(1024, kib - mib)))
      '
    '';

  webConfig = builtins.toFile "nixtasks-web-${host}.json" (builtins.toJSON {
    inherit host;
    inherit (knobs) healthy;
    inherit (site) siteName motd;
  });

  # Unit files as NixOS ships them in $toplevel/etc/systemd/system.
  # wantedBy: the targets whose .wants/ directory gets a link to the unit.
  units = {
    "nixtasks-web.service" = {
      wantedBy = [ "multi-user.target" ];
      text = ''
        [Unit]
        Description=nixtasks example web service (release ${release})
        After=network.target

        [Service]
        Type=notify
        ExecStart=/usr/bin/python3 ${webapp}/bin/nixtasks-webapp --config ${webConfig} --port 80
        Restart=on-failure
        RestartSec=2

        [Install]
        WantedBy=multi-user.target
      '';
    };
  } // builtins.listToAttrs (map
    (name: {
      inherit name;
      value = {
        wantedBy = [ "multi-user.target" ];
        # The <3> prefix makes the line error priority in the journal
        # (SyslogLevelPrefix= defaults to yes), so `journalctl -p err` shows it.
        text = ''
          [Unit]
          Description=Deliberately failing unit (hosts.json failed_units)

          [Service]
          Type=oneshot
          ExecStart=/bin/sh -c 'echo "<3>${name}: simulated failure (failed_units knob)"; exit 1'

          [Install]
          WantedBy=multi-user.target
        '';
      };
    })
    (if builtins.elem "nixtasks-web.service" failedUnitNames
     then throw "${host}: failed_units must not name nixtasks-web"
     else failedUnitNames));

  unitNames = builtins.attrNames units;

  # Shell that writes every unit file (content passed in the environment as
  # unit_0, unit_1, ...) and its .wants links.
  writeUnits = builtins.concatStringsSep "\n" (builtins.genList
    (i:
      let name = builtins.elemAt unitNames i; in
      ''
        printf '%s' "$unit_${toString i}" > "$units/${name}"
      '' + builtins.concatStringsSep "\n" (map
        (target: ''
          mkdir -p "$units/${target}.wants"
          ln -s "../${name}" "$units/${target}.wants/${name}"
        '')
        units.${name}.wantedBy))
    (builtins.length unitNames));

  unitEnv = builtins.listToAttrs (builtins.genList
    (i: {
      name = "unit_${toString i}";
      value = units.${builtins.elemAt unitNames i}.text;
    })
    (builtins.length unitNames));

  nixosVersion = ''
    #!/bin/sh
    # nixos-version of the nixtasks example fleet (same flags as NixOS's).
    case "''${1-}" in
      "") echo '${release}' ;;
      --configuration-revision) echo '${rev}' ;;
      --json) echo '{"nixosVersion": "${release}", "configurationRevision": "${rev}"}' ;;
      *) echo "Usage: nixos-version [--configuration-revision|--json]" >&2; exit 1 ;;
    esac
  '';

  # What switch-to-configuration reads about this system.
  # fail_boot_entry only when set: the systems of every other release stay as they were.
  activation = builtins.toJSON ({
    inherit host release;
    inherit (knobs) healthy fail_activation failed_units break_network activation_seconds;
    configurationRevision = rev;
  } // (if knobs.fail_boot_entry then { fail_boot_entry = true; } else { }));
in
shBuild "nixos-system-${host}-${release}"
  ({
    inherit release activation nixosVersion;
    stc = ./switch-to-configuration.py;
  } // unitEnv)
  ''
    ${if knobs.build_seconds > 0
      then "echo 'build: sleeping ${toString knobs.build_seconds} s'; sleep ${toString knobs.build_seconds}"
      else ""}
    ${if knobs.fail_build then "echo 'build: failing (fail_build)' >&2; exit 1" else ""}
    mkdir -p "$out/bin" "$out/sw/bin" "$out/etc/systemd/system"
    printf '%s' "$release" > "$out/nixos-version"
    printf '%s' '${rev}' > "$out/configuration-revision"
    printf '%s\n' "$activation" > "$out/nixtasks.json"
    printf '%s' "$nixosVersion" > "$out/sw/bin/nixos-version"
    chmod 0555 "$out/sw/bin/nixos-version"
    cp "$stc" "$out/bin/switch-to-configuration"
    chmod 0555 "$out/bin/switch-to-configuration"
    units="$out/etc/systemd/system"
    ${writeUnits}
    ${if knobs.payload_kib > 0
      then "head -c ${toString (knobs.payload_kib * 1024)} /dev/urandom > \"$out/payload\""
      else ""}${if knobs.shared_payload_kib > 0
      # On the line above's end: with the knob at 0, every system is the same derivation as before it.
      then "\nln -s ${sharedPayload} \"$out/shared-payload\""
      else ""}
  ''
