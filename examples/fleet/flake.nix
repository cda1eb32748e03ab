# Example fleet for nixtasks: NixOS-shaped system closures for the lab.
#
# The lab hosts are Debian containers running a real systemd; what is
# simulated is only the NixOS *system closure*. Each
# nixosConfigurations.<host>.config.system.build.toplevel is a small store
# path with the shape of a NixOS toplevel (nixos-version, sw/bin,
# etc/systemd/system, bin/switch-to-configuration) whose
# switch-to-configuration drives the host's real systemd. No nixpkgs: every
# derivation is a plain builtins.derivation run by /bin/sh + coreutils, so it
# builds offline in a fraction of a second, here or on a lab host.
#
# hosts.json holds the knobs (release, healthy, fail_activation, ...); see
# system/default.nix for what each one does.
{
  description = "nixtasks example fleet (NixOS-shaped closures for the lab)";

  # The one input: a local flake beside this one, so that `nix flake update`
  # (or `nix flake lock --update-input site`) has something real to update
  # offline. A relative path input is resolved against this flake's own
  # source tree, so it works both as `path:./examples/fleet` and as
  # `git+file:///work/main?dir=examples/fleet` (site/ must then be tracked
  # by git like every other file of the flake).
  inputs.site.url = "path:./site";

  outputs = { self, site }:
    let
      system = "x86_64-linux";
      fleet = builtins.fromJSON (builtins.readFile ./hosts.json);

      # web1, web2 and db1 always exist; hosts.json may add more.
      alwaysHosts = [ "web1" "web2" "db1" ];
      hostNames = alwaysHosts
        ++ builtins.filter (h: !(builtins.elem h alwaysHosts))
          (builtins.attrNames (fleet.hosts or { }));

      mkToplevel = import ./system {
        inherit system;
        site = site.lib;
        # Dirty trees have no rev in Nix 2.8 (no dirtyRev yet).
        revision = self.rev or "unknown";
        defaults = fleet.defaults or { };
      };

      hostConfig = name:
        let toplevel = mkToplevel name (fleet.hosts.${name} or { });
        in {
          config = {
            networking.hostName = name;
            system.nixos.release = toplevel.release;
            system.build.toplevel = toplevel;
          };
        };
    in
    {
      nixosConfigurations = builtins.listToAttrs
        (map (name: { inherit name; value = hostConfig name; }) hostNames);

      # Convenience: `nix build ./examples/fleet#web1`.
      packages.${system} = builtins.mapAttrs
        (_: c: c.config.system.build.toplevel)
        self.nixosConfigurations;
    };
}
