"""What runs inside the default guest (pure text): /init, busybox init's inittab, the ACPI power-button
handler, udhcpc's lease hook, and `euca-guest-setup`, which does at boot what cloud-init's EC2 data source
does on a full image, reduced to what the default image needs.

/init loads the virtio modules, prints the boot marker, lists /dev/vda, and in the background asks for a
DHCP lease and then runs euca-guest-setup; PID 1 goes to busybox init. euca-guest-setup reads the metadata
service at http://169.254.169.254/latest/ (IMDSv2: a token PUT first, through busybox nc since busybox wget
cannot PUT; IMDSv1 plain GETs when no token comes), and then, one console line per step:

    euca-guest: metadata IMDSv2 instance-id=i-...
    euca-guest: hostname <local-hostname's first label> (<local-hostname>)
    euca-guest: ssh key installed for root (<key type> <comment>)      [public-keys/0/openssh-key]
    euca-guest: sshd started (dropbear, host key <fingerprint>)        [keys only, no passwords]
    euca-guest: user-data running                                      [user-data starting with #!]
    ... the script's own output ...
    euca-guest: user-data exit <status>

User data that does not start with `#!` is left in /run/user-data, unrun (as cloud-init leaves what it
cannot handle). The paths are EC2's, so an image with cloud-init finds the same service as its EC2 source.
"""

from __future__ import annotations

BOOT_MARKER = "euca-guest: booted"
ROOT_MARKER_FILE = "euca-root-marker"
SETUP_PATH = "/usr/sbin/euca-guest-setup"
DROPBEAR_HOST_KEY = "/etc/dropbear/dropbear_ed25519_host_key"

INIT_TEMPLATE = r"""#!/bin/busybox sh
# euca default guest. PID 1 until it hands over to busybox init (PID 1 must never exit: that panics).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt/root /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
say() { echo "euca-guest: $*"; }

loaded=""; failed=""
for m in @MODULES@; do
    if insmod "/lib/modules/@KVER@/$m.ko" 2>/dev/null; then loaded="$loaded $m"; else failed="$failed $m"; fi
done
say "modules loaded:${loaded:- none}${failed:+ failed:$failed}"
# Before the boot marker, so a guest that reported booted also powers off on libvirt's ACPI request.
acpid -c /etc/acpi -l /run/acpid.log
# A small in-memory log (logread over ssh) for the ssh server's messages.
syslogd -C64

iid=""; shell=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        euca.instance_id=*|instance_id=*) iid="${word#*=}" ;;
        euca.shell=1) shell=1 ;;
    esac
done
if [ -z "$iid" ]; then
    for f in /sys/class/dmi/id/product_serial /sys/class/dmi/id/chassis_asset_tag /sys/class/dmi/id/board_serial; do
        v="$(cat "$f" 2>/dev/null)"
        case "$v" in i-*) iid="$v"; break ;; esac
    done
fi
[ -n "$iid" ] && hostname "$iid"
echo "@MARKER@ ${iid:-unknown} kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s"

disks=""
for d in /sys/block/vd*; do [ -e "$d" ] && disks="$disks ${d##*/}"; done
say "disks:${disks:- none}"
if [ -b /dev/vda ]; then
    if mount -o ro /dev/vda /mnt/root 2>/dev/null; then
        say "/dev/vda mounted: $(ls /mnt/root | tr '\n' ' ')"
        [ -f /mnt/root/@ROOT_MARKER@ ] && say "root marker: $(head -n 1 /mnt/root/@ROOT_MARKER@)"
    else
        say "/dev/vda present, not mountable"
    fi
fi

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    # In the background: a guest without a DHCP server must not wait for one. The metadata steps follow
    # the lease (euca-guest-setup waits for the service itself).
    (udhcpc -i eth0 -s /etc/udhcpc.script -t 5 -T 2 -A 10 -b >/dev/null 2>&1
     @SETUP@ </dev/null) &
else
    say "no eth0"
fi

if [ -n "$shell" ]; then
    echo "ttyS0::respawn:/bin/cttyhack /bin/sh" >> /etc/inittab
fi
say "ready"
exec /bin/busybox init
"""

INITTAB = """::ctrlaltdel:/bin/busybox reboot
::shutdown:/bin/busybox umount -a -r
"""

# poweroff -f: straight to the kernel, as PID 1 may still be /init (which ignores poweroff's signal) when the
# button is pressed early; nothing needs an orderly shutdown (the root disk is mounted read-only).
POWER_BUTTON = """#!/bin/sh
echo "euca-guest: power button, powering off" > /dev/console
sync
poweroff -f
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# busybox udhcpc hook: configure $interface from the lease and report it on the console.
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        if [ -n "$router" ]; then
            ip route add default via "${router%% *}" dev "$interface" 2>/dev/null
        fi
        : > /etc/resolv.conf
        for s in $dns; do echo "nameserver $s" >> /etc/resolv.conf; done
        echo "euca-guest: $interface $1 $ip/${mask:-24} router=${router:-none}" > /dev/console
        ;;
esac
exit 0
"""

# Every wget/nc runs under `timeout`: busybox wget's own -T is not in every build, and a service that
# accepts but never answers must not stop the boot.
SETUP_TEMPLATE = r"""#!/bin/sh
# euca-guest-setup: the instance's metadata at boot (what cloud-init's EC2 data source does, reduced).
MD=169.254.169.254
HOST_KEY=@HOST_KEY@
say() { echo "euca-guest: $*" > /dev/console; }

# IMDSv2: a session token from PUT /latest/api/token (busybox wget cannot PUT: a raw request through nc).
imds_token() {
    reply="$(printf 'PUT /latest/api/token HTTP/1.0\r\nHost: %s\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n' "$MD" \
        | timeout 10 nc "$MD" 80 2>/dev/null | tr -d '\r')"
    case "$reply" in
        "HTTP/1."?" 200 "*) printf '%s\n' "$reply" | sed '1,/^$/d' ;;
    esac
}

# md PATH: GET /latest/PATH to stdout (with the token when there is one); fails unless the answer is 200.
md() {
    if [ -n "$token" ]; then
        timeout 10 wget -q -O - --header "X-aws-ec2-metadata-token: $token" "http://$MD/latest/$1" 2>/dev/null
    else
        timeout 10 wget -q -O - "http://$MD/latest/$1" 2>/dev/null
    fi
}

# The service answers once the lease is there and the cluster's rules are in place: wait for it.
tries=0
while :; do
    token="$(imds_token)"
    iid="$(md meta-data/instance-id)" && [ -n "$iid" ] && break
    tries=$((tries + 1))
    if [ "$tries" -ge 90 ]; then
        say "metadata service unreachable"
        break
    fi
    sleep 2
done
if [ -n "$iid" ]; then
    if [ -n "$token" ]; then version=IMDSv2; else version=IMDSv1; fi
    say "metadata $version instance-id=$iid"

    name="$(md meta-data/local-hostname)"
    if [ -n "$name" ]; then
        short="${name%%.*}"
        hostname "$short"
        echo "$short" > /etc/hostname
        echo "127.0.1.1 $name $short" >> /etc/hosts
        say "hostname $short ($name)"
    fi

    key="$(md meta-data/public-keys/0/openssh-key)"
    if [ -n "$key" ]; then
        mkdir -p /root/.ssh
        chmod 700 /root /root/.ssh
        printf '%s\n' "$key" > /root/.ssh/authorized_keys
        chmod 600 /root/.ssh/authorized_keys
        say "ssh key installed for root ($(printf '%s\n' "$key" | head -n 1 | cut -d' ' -f1,3))"
    else
        say "no ssh key in the metadata"
    fi
fi

# The ssh server, keys only (-s: no password logins), with an ed25519 host key made at first boot.
if [ -x /usr/sbin/dropbear ]; then
    mkdir -p /etc/dropbear
    [ -f "$HOST_KEY" ] || dropbearkey -t ed25519 -f "$HOST_KEY" >/dev/null 2>&1
    if dropbear -r "$HOST_KEY" -s -p 22 -P /run/dropbear.pid; then
        say "sshd started (dropbear, host key $(dropbearkey -y -f "$HOST_KEY" 2>/dev/null | sed -n 's/^Fingerprint: //p'))"
    else
        say "sshd failed to start"
    fi
else
    say "no ssh server in this image"
fi

[ -n "$iid" ] || exit 0
rm -f /run/user-data
if md user-data > /run/user-data && [ -s /run/user-data ]; then
    if [ "$(head -c 2 /run/user-data)" = "#!" ]; then
        chmod 700 /run/user-data
        say "user-data running"
        (cd /root && /run/user-data) > /dev/console 2>&1 < /dev/null
        say "user-data exit $?"
    else
        say "user-data is not a script (no #!): left in /run/user-data"
    fi
else
    rm -f /run/user-data
    say "no user-data"
fi
"""

# Accounts for the ssh server: root's home /root, its shell busybox sh; '*' (no password, not a locked '!').
PASSWD = "root:*:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\n"
SHELLS = "/bin/sh\n"
HOSTS = "127.0.0.1 localhost\n"


def init_script(kernel_version: str, modules: list[str]) -> str:
    return (
        INIT_TEMPLATE.replace("@MODULES@", " ".join(modules))
        .replace("@KVER@", kernel_version)
        .replace("@MARKER@", BOOT_MARKER)
        .replace("@ROOT_MARKER@", ROOT_MARKER_FILE)
        .replace("@SETUP@", SETUP_PATH)
    )


def setup_script() -> str:
    return SETUP_TEMPLATE.replace("@HOST_KEY@", DROPBEAR_HOST_KEY)


def all_scripts() -> tuple[str, ...]:
    """Everything this module puts in the image (for the recipe stamp)."""
    return (INIT_TEMPLATE, INITTAB, POWER_BUTTON, UDHCPC_SCRIPT, SETUP_TEMPLATE, PASSWD, GROUP, SHELLS, HOSTS)
