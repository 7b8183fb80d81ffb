#!/usr/bin/env bash
# CI: an sshd on 127.0.0.1 only, with a dedicated key for root, so that
# tests/test_ray_up_local.py can run `ray up` against this machine through
# Ray's local (on-premises) provider, which reaches every node over SSH.
#
# Idempotent: safe to run twice, and safe when sshd is already running (it is
# reloaded with the config below, never stopped). Run as root on Debian/Ubuntu.
#
#   sudo .ci/setup-sshd.sh            # then: ssh -i /root/.ssh/featstore_test_ed25519 root@127.0.0.1 true
set -euo pipefail

KEY=/root/.ssh/featstore_test_ed25519   # the test key; tests/test_ray_up_local.py uses this path
DROPIN=/etc/ssh/sshd_config.d/featstore-test.conf

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-sshd.sh: run as root (it installs packages and configures sshd)" >&2
    exit 1
fi

# 1. The drop-in goes in before the package: if openssh-server's postinst starts
#    sshd, it already listens on 127.0.0.1 only, never on a public address.
#    (Debian's sshd_config includes sshd_config.d/*.conf before its own settings,
#    and for most keywords sshd keeps the first value it reads.)
mkdir -p /etc/ssh/sshd_config.d
cat > "$DROPIN.tmp" <<'EOF'
# Written by featstore .ci/setup-sshd.sh: loopback only, keys only.
ListenAddress 127.0.0.1
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
EOF
mv "$DROPIN.tmp" "$DROPIN"

# 2. Packages: openssh-server, and rsync, which `ray up` uses to copy
#    file_mounts and its bootstrap config to the head (on both ends).
if [[ ! -x /usr/sbin/sshd ]] || ! command -v ssh >/dev/null || ! command -v rsync >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        openssh-server openssh-client rsync >/dev/null
fi
if ! grep -qiE '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/\*\.conf' /etc/ssh/sshd_config; then
    # Older sshd_config without the drop-in directory: include it first.
    sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config
fi
ssh-keygen -A >/dev/null            # host keys, if the package did not make them
mkdir -p /run/sshd                  # privilege separation directory
chmod 0755 /run/sshd

# 3. Refuse to go on if the effective config listens anywhere but loopback
#    (a ListenAddress elsewhere in sshd_config would add to ours).
/usr/sbin/sshd -t
listen=$(/usr/sbin/sshd -T | awk 'tolower($1) == "listenaddress" {print $2}' | sort -u)
if [[ "$listen" != "127.0.0.1:22" ]]; then
    echo "setup-sshd.sh: sshd would listen on: $listen (expected only 127.0.0.1:22);" \
         "remove the other ListenAddress lines from /etc/ssh/sshd_config" >&2
    exit 1
fi

# 4. The test key, authorized for root from loopback only.
install -d -m 0700 /root/.ssh
if [[ ! -f $KEY ]]; then
    ssh-keygen -q -t ed25519 -N '' -C featstore-test -f "$KEY"
fi
pub=$(cut -d' ' -f1,2 "$KEY.pub")
touch /root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
if ! grep -qF "$pub" /root/.ssh/authorized_keys; then
    echo "from=\"127.0.0.1\" $pub featstore-test" >> /root/.ssh/authorized_keys
fi

# 5. Host key for plain `ssh root@127.0.0.1`, taken from the host key file
#    itself (no trust on first use). Ray does not need it: it passes
#    StrictHostKeyChecking=no and UserKnownHostsFile=/dev/null.
touch /root/.ssh/known_hosts
chmod 0600 /root/.ssh/known_hosts
if ! ssh-keygen -F 127.0.0.1 -f /root/.ssh/known_hosts >/dev/null; then
    echo "127.0.0.1 $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" >> /root/.ssh/known_hosts
fi

# 6. Start sshd, or make a running one reread the config (SIGHUP: sshd
#    re-executes itself with the new settings; open sessions stay up).
if [[ -d /run/systemd/system ]] && systemctl is-active --quiet ssh 2>/dev/null; then
    systemctl reload ssh
elif [[ -s /run/sshd.pid ]] && kill -0 "$(cat /run/sshd.pid)" 2>/dev/null; then
    kill -HUP "$(cat /run/sshd.pid)"
elif [[ -d /run/systemd/system ]]; then
    systemctl start ssh
else
    /usr/sbin/sshd                  # no init system (containers): daemonizes, writes /run/sshd.pid
fi

# 7. Prove it: a key login as root on 127.0.0.1 (retry while sshd comes up).
for _ in $(seq 1 20); do
    if ssh -i "$KEY" -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=2 \
        root@127.0.0.1 true 2>/dev/null; then
        echo "setup-sshd.sh: sshd on 127.0.0.1:22 accepts $KEY for root"
        exit 0
    fi
    sleep 0.5
done
echo "setup-sshd.sh: could not log in as root@127.0.0.1 with $KEY" >&2
ssh -i "$KEY" -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=2 root@127.0.0.1 true
exit 1
