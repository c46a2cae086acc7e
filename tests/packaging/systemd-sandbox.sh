#!/bin/bash
# Runs systemd as PID 1 of a private PID and mount namespace (started by
# tests/api/packaging.rs with `unshare --fork --pid --mount --mount-proc`)
# with the unit deploy/kmsd.service, unchanged but for the drop-in below, so
# that its whole sandbox (seccomp filter, private users, read-only system,
# no capabilities) applies to the real kmsd binary.
#
# usage: systemd-sandbox.sh DIR UNIT BIN
#   DIR   the test's directory: kmsd.toml in, kmsd.log out (seen at /run/t)
#   UNIT  the unit file under test
#   BIN   the kmsd binary (installed as /usr/local/bin/kmsd inside)
#
# Everything this systemd could touch on the shared file system is masked
# first: /tmp, /var/tmp, /var/lib, /var/log and /run are private tmpfs, /etc
# is an overlay (the `kmsd` user and /etc/kmsd/kmsd.toml exist only inside).
# The drop-in removes the default dependencies (sysinit.target would run
# systemd-tmpfiles, which empties /tmp at "boot") and sends kmsd's output to
# DIR/kmsd.log, as no journald runs here.
set -euo pipefail
T=$1; UNIT=$2; BIN=$3
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/t /run/etc-upper /run/etc-work /run/systemd/system/kmsd.service.d
mount --bind "$T" /run/t
# Copied before /tmp is masked: the checkout itself may live under /tmp.
cp "$BIN" /run/kmsd-bin
cp "$UNIT" /run/kmsd.service.unit
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /var/log
mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/etc-upper,workdir=/run/etc-work /etc
echo 'kmsd:x:990:990:kmsd:/nonexistent:/usr/sbin/nologin' >> /etc/passwd
echo 'kmsd:x:990:' >> /etc/group
mkdir -p /etc/kmsd
cp /run/t/kmsd.toml /etc/kmsd/kmsd.toml
mount -t tmpfs -o mode=0755 tmpfs /usr/local/bin
mv /run/kmsd-bin /usr/local/bin/kmsd
mv /run/kmsd.service.unit /run/systemd/system/kmsd.service
cat > /run/systemd/system/kmsd.service.d/test.conf <<'X'
[Unit]
DefaultDependencies=no
[Service]
StandardOutput=append:/run/t/kmsd.log
StandardError=append:/run/t/kmsd.log
X
exec env container=docker /lib/systemd/systemd --system --unit=kmsd.service --log-target=console --log-level=notice
