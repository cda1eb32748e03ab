# Site-wide settings shared by every host of the example fleet.
#
# This is a separate flake only so that the fleet flake has one real input
# that `nix flake update` / `nix flake lock --update-input site` can update
# offline: edit a value here and the fleet's flake.lock goes stale until the
# input is updated, exactly like a pinned nixpkgs would.
{
  description = "nixtasks example fleet: site-wide settings";

  outputs = { self }: {
    lib = {
      siteName = "nixtasks-lab";
      motd = "Welcome to the nixtasks lab fleet.";
    };
  };
}
