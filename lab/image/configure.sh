#!/bin/sh
# Runs inside the freshly bootstrapped base image (chroot), once per image.
set -eu
# Each host writes its own machine-id into its overlay; D-Bus shares it.
: > /etc/machine-id
mkdir -p /var/lib/dbus
ln -sfn /etc/machine-id /var/lib/dbus/machine-id
# nspawn sets the host name; host keys are made per host by labctl.
rm -f /etc/hostname /etc/ssh/ssh_host_*
id deploy >/dev/null 2>&1 || useradd --create-home --shell /bin/bash deploy
# '*' = no password, but not locked: sshd with PAM refuses locked accounts.
usermod -p '*' deploy
# Debian's nix-daemon socket is for group nix-users (NixOS allows every user).
usermod -a -G nix-users deploy
usermod -p '*' root
chmod 0440 /etc/sudoers.d/deploy /etc/sudoers.d/00-lab-path
mkdir -p /root/.ssh /home/deploy/.ssh /nix/var/nix/profiles /boot
chown deploy:deploy /home/deploy/.ssh
chmod 700 /root/.ssh /home/deploy/.ssh
systemctl enable nixos-stage2.service nix-daemon.socket ssh.service
# nginx runs only on the `cache` host (labctl enables it in that host's layer), with labctl's site alone.
systemctl disable nginx.service
rm -f /etc/nginx/sites-enabled/default
# Nothing here has a console, a network beyond the lab, or a clock to sync.
systemctl mask console-getty.service getty@tty1.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service
