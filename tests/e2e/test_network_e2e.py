"""Issue 9's proof with real guests: security groups, public and elastic addresses, the metadata service and
ssh, through the real CLC -> CC -> NC path, seen from outside the cloud.

The cloud is a one-box (`euca --role all`, helpers.onebox_cloud) plus a cluster of its own in separate CC and
NC processes (so its CC can be restarted alone), its bridge and CC in libvirtd's `euca` namespace. The
outside is scripts/setup-host's `euca-client` namespace, routed to the public pool through the CC's
namespace: every ssh below is `ip netns exec euca-client ssh -i k.pem root@<address>`, as the README says.
The calls are the aws CLI (a shell that sourced the eucarc) and boto3, as a user makes them.

Two guests of the default image serve the whole module (TCG boots are slow), in order:
  A: group `web` (tcp/22 from anywhere), key pair `k`, a user-data script;
  B: group `db` (tcp/22 from the client's address only), key pair `k`.
1. ssh into A at its PublicIpAddress with the key pair; its hostname is its private DNS name's.
2. Inside A: the metadata service gives A's instance id, the key pair's public key and the user data, with
   IMDSv1 and IMDSv2 (a bad token is refused); the script's output is in get-console-output.
3. A cannot reach B's sshd at B's private address until `db` admits `web` as a source group.
4. The CC restarted with both running: the same rules again (iptables-save), none twice, one uplink address
   per public address, and ssh still works.
5. revoke-security-group-ingress of tcp/22 on `web`: ssh to A times out; authorized again, it works.
6. An elastic IP associated with A, then re-associated with B: ssh at that address follows it.
7. Both terminated: no rule, NAT entry or uplink address of theirs is left in the CC's namespace, and their
   pool addresses are back in the pool.

Waits poll with a long deadline that only stops a hang; nothing asserts how long things take.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from euca.roles.cc.filters import ChainNames
from helpers.guest_ssh import ssh, ssh_ok, wait_for_ssh, write_private_key
from helpers.onebox_cloud import (
    INSTANCE_TYPE,
    REPO,
    Cloud,
    GuestBridges,
    SecondCluster,
    start_cloud_in_netns,
    start_second_cluster,
)
from helpers.polling import wait_until
from helpers.qemu_host import unusable_reason

CLIENT_NETNS = os.environ.get("EUCA_CLIENT_NETNS", "euca-client")
CLIENT_ADDRESS = "192.168.254.2"  # setup-host's client end of the uplink
# Out of the way of a one-box's default pool (10.99.0.10-40) in the same namespaces; routed like it.
PUBLIC_POOL = "10.99.0.200-10.99.0.230"
# The boot image built by this module's cloud lives apart from the shared cache (other checkouts may build
# another recipe there at the same time); kept between runs.
IMAGE_CACHE = Path("/var/tmp/euca-e2e-network-cache")

USER_DATA = """#!/bin/sh
echo "user-data says hello from $(hostname)"
echo "user-data ran as uid $(id -u)"
"""


def _unusable() -> str | None:
    reason = unusable_reason()
    if reason is not None:
        return reason
    for tool in ("ssh", "ssh-keygen", "iptables-save"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} is not installed (scripts/install-deps.sh)"
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if CLIENT_NETNS not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        subprocess.run(["bash", str(REPO / "scripts" / "setup-host")], capture_output=True)
    if CLIENT_NETNS not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        return f"no {CLIENT_NETNS} namespace (scripts/setup-host makes it)"
    return None


_REASON = _unusable()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


# -- the cloud, the cluster, the user's key and groups, the two guests -------------------------------------------


@pytest.fixture(scope="module")
def cloud(guest_bridges: GuestBridges) -> Iterator[Cloud]:
    with start_cloud_in_netns(
        guest_bridges,
        IMAGE_CACHE,
        subnet_prefix="10.75",
        extra_args=["--set", f"clc.public_addresses={PUBLIC_POOL}"],
    ) as c:
        yield c


@pytest.fixture(scope="module")
def cluster(cloud: Cloud, guest_bridges: GuestBridges) -> Iterator[SecondCluster]:
    with start_second_cluster(cloud, guest_bridges, subnet_prefix="10.74") as second:
        yield second


@dataclass
class Guest:
    instance_id: str
    private_ip: str
    hostname: str  # its private DNS name's first label, as the guest sets it


@dataclass
class Setup:
    cloud: Cloud
    cluster: SecondCluster
    key: Path
    a: Guest
    b: Guest
    work: Path
    launch_publics: set[str]  # the pool addresses A and B got at launch

    @property
    def cloud_netns(self) -> str:
        # the CC's namespace: libvirtd's, where the bridges are
        args = self.cluster.cc.args
        return next(a.split("=", 1)[1] for a in args if a.startswith("cc.netns="))

    def describe(self, guest: Guest) -> dict[str, Any]:
        return self.cloud.describe([guest.instance_id])[guest.instance_id]

    def public_ip(self, guest: Guest) -> str:
        ip = self.describe(guest).get("PublicIpAddress")
        assert ip, f"{guest.instance_id} has no public address"
        return str(ip)

    def detail(self) -> str:
        return f"{self.cluster.cc.tail()}\n{self.cloud.tail()}"


def _guest(described: dict[str, Any]) -> Guest:
    return Guest(
        described["InstanceId"], described["PrivateIpAddress"], described["PrivateDnsName"].split(".", 1)[0]
    )


@pytest.fixture(scope="module")
def setup(cloud: Cloud, cluster: SecondCluster, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    work = tmp_path_factory.mktemp("network-e2e")
    # The user's key pair and groups, with the aws CLI.
    pem = cloud.aws("ec2", "create-key-pair", "--key-name", "k")["KeyMaterial"]
    key = write_private_key(work / "k.pem", pem)
    cloud.aws("ec2", "create-security-group", "--group-name", "web", "--description", "web servers")
    cloud.aws("ec2", "create-security-group", "--group-name", "db", "--description", "databases")
    cloud.aws(
        "ec2", "authorize-security-group-ingress", "--group-name", "web",
        "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0",
    )  # fmt: skip
    cloud.aws(
        "ec2", "authorize-security-group-ingress", "--group-name", "db",
        "--protocol", "tcp", "--port", "22", "--cidr", f"{CLIENT_ADDRESS}/32",
    )  # fmt: skip
    (work / "hello.sh").write_text(USER_DATA)
    cloud.wait_capacity(cluster.name, 2, detail=cluster.cc.tail)
    # A from the aws CLI, B from boto3, both in the cluster's zone.
    a_id = cloud.aws(
        "ec2", "run-instances", "--image-id", cloud.emi, "--instance-type", INSTANCE_TYPE,
        "--key-name", "k", "--security-groups", "web", "--user-data", f"file://{work / 'hello.sh'}",
        "--placement", f"AvailabilityZone={cluster.name}",
    )["Instances"][0]["InstanceId"]  # fmt: skip
    cluster.launched.add(a_id)
    b_id = cloud.ec2().run_instances(
        ImageId=cloud.emi,
        MinCount=1,
        MaxCount=1,
        InstanceType=INSTANCE_TYPE,
        KeyName="k",
        SecurityGroups=["db"],
        Placement={"AvailabilityZone": cluster.name},
    )["Instances"][0]["InstanceId"]
    cluster.launched.add(b_id)
    running = cloud.wait_states([a_id, b_id], "running")
    publics = {str(running[i].get("PublicIpAddress") or "") for i in (a_id, b_id)} - {""}
    s = Setup(cloud, cluster, key, _guest(running[a_id]), _guest(running[b_id]), work, publics)
    cloud.wait_console(a_id, "euca-guest: user-data exit")
    cloud.wait_console(b_id, "euca-guest: sshd started")
    return s


# -- what the CC's namespace holds -------------------------------------------------------------------------------


def iptables_save(netns: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, "iptables-save"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def cluster_rules(netns: str, cluster: str) -> list[str]:
    """The lines of iptables-save that are this cluster's: its chains' declarations (counters dropped), their
    rules, and the built-in chains' jumps to them, in order, tables named."""
    names = ChainNames.of(cluster)

    def ours(chain: str) -> bool:
        return chain in (names.cluster, names.dnat) or names.is_group_chain(chain)

    table, out = "", []
    for line in iptables_save(netns).splitlines():
        if line.startswith("*"):
            table = line
        elif line.startswith(":") and ours(line[1:].split(" ", 1)[0]):
            out.append(f"{table} {line.split(' ', 1)[0]}")
        elif line.startswith("-A "):
            words = line.split()
            target = words[words.index("-j") + 1] if "-j" in words else ""
            if ours(words[1]) or ours(target):
                out.append(f"{table} {line}")
    return out


def uplink_addresses(netns: str, cluster: str) -> list[str]:
    """The /32s this cluster's CC put on its namespace's uplink (labelled <dev>:<tag>)."""
    tag = ChainNames.of(cluster).tag
    shown = subprocess.run(
        ["ip", "-n", netns, "-o", "-4", "addr", "show"], capture_output=True, text=True
    ).stdout
    return [m.group(1) for m in re.finditer(r"inet (\S+)/32 .*?\S+:" + tag + r"\b", shown)]


def ssh_hostname(s: Setup, address: str) -> str | None:
    done = ssh(CLIENT_NETNS, s.key, address, "hostname", connect_timeout=5, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else None


# -- 1. ssh with the key pair at the public address --------------------------------------------------------------


def test_ssh_with_the_key_pair_at_the_public_address(setup: Setup) -> None:
    s = setup
    public = s.public_ip(s.a)
    assert re.fullmatch(r"10\.99\.0\.2\d\d", public), public
    assert wait_for_ssh(CLIENT_NETNS, s.key, public, detail=s.detail) == s.a.hostname
    # root, with the key from the metadata service; the boot steps on the console
    assert ssh_ok(CLIENT_NETNS, s.key, public, "id -u").strip() == "0"
    console = s.cloud.console(s.a.instance_id)
    for line in (
        f"euca-guest: metadata IMDSv2 instance-id={s.a.instance_id}",
        f"euca-guest: hostname {s.a.hostname} ",
        "euca-guest: ssh key installed for root (ssh-rsa",
        "euca-guest: sshd started (dropbear",
    ):
        assert line in console, (line, console[-3000:])


# -- 2. the metadata service from inside the guest ---------------------------------------------------------------

TOKEN = (
    "printf 'PUT /latest/api/token HTTP/1.0\\r\\nX-aws-ec2-metadata-token-ttl-seconds: 60\\r\\n\\r\\n'"
    " | nc 169.254.169.254 80 | tr -d '\\r' | sed '1,/^$/d'"
)
MD = "http://169.254.169.254/latest"


def test_the_metadata_service_answers_the_guest_with_imdsv1_and_v2(setup: Setup) -> None:
    s = setup
    public = s.public_ip(s.a)

    def inside(command: str) -> str:
        return ssh_ok(CLIENT_NETNS, s.key, public, command)

    expected_key = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(s.key)], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    # IMDSv1: plain GETs
    assert inside(f"wget -q -O - {MD}/meta-data/instance-id") == s.a.instance_id
    assert inside(f"wget -q -O - {MD}/meta-data/public-keys/0/openssh-key").split()[:2] == expected_key
    assert inside(f"wget -q -O - {MD}/user-data") == USER_DATA
    assert inside(f"wget -q -O - {MD}/meta-data/local-ipv4") == s.a.private_ip
    assert inside(f"wget -q -O - {MD}/meta-data/public-ipv4") == public
    # IMDSv2: a token from PUT /latest/api/token, then GETs carrying it; a wrong token is refused
    v2 = f't="$({TOKEN})"; [ -n "$t" ] || exit 3; wget -q -O - --header "X-aws-ec2-metadata-token: $t" {MD}'
    assert inside(f"{v2}/meta-data/instance-id") == s.a.instance_id
    assert inside(f"{v2}/meta-data/public-keys/0/openssh-key").split()[:2] == expected_key
    assert inside(f"{v2}/user-data") == USER_DATA
    refused = ssh(
        CLIENT_NETNS,
        s.key,
        public,
        f"wget -q -O - --header 'X-aws-ec2-metadata-token: bogus' {MD}/meta-data/instance-id",
    )
    assert refused.returncode not in (0, 255) and s.a.instance_id not in refused.stdout, refused
    # B's own id to B (the service answers by source address)
    b_public = s.public_ip(s.b)
    wait_for_ssh(CLIENT_NETNS, s.key, b_public, detail=s.detail)
    assert (
        ssh_ok(CLIENT_NETNS, s.key, b_public, f"wget -q -O - {MD}/meta-data/instance-id") == s.b.instance_id
    )
    # the user-data script's output, through the aws CLI's get-console-output
    out = s.cloud.aws("ec2", "get-console-output", "--instance-id", s.a.instance_id)["Output"]
    assert f"user-data says hello from {s.a.hostname}" in out
    assert "user-data ran as uid 0" in out
    assert "euca-guest: user-data exit 0" in out


# -- 3. groups between instances ---------------------------------------------------------------------------------


def _a_reaches_b(s: Setup, address: str | None = None) -> bool:
    """Whether A gets B's sshd banner at B's private address, or `address` (a SYN dropped by the filter
    times out)."""
    out = ssh_ok(
        CLIENT_NETNS,
        s.key,
        s.public_ip(s.a),
        f"timeout 8 nc -w 4 {address or s.b.private_ip} 22 </dev/null 2>&1 | head -c 8; true",
    )
    return "SSH-2.0-" in out


def test_instances_in_different_groups_meet_only_through_a_source_group_rule(setup: Setup) -> None:
    s = setup
    # B's sshd answers the client (db admits it) but not A: web is not among db's sources.
    assert ssh_hostname(s, s.public_ip(s.b)) == s.b.hostname
    assert not _a_reaches_b(s)
    s.cloud.ec2().authorize_security_group_ingress(
        GroupName="db",
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [{"GroupName": "web"}]}
        ],
    )
    wait_until(
        "A to reach B's sshd once db admits web", lambda: _a_reaches_b(s), deadline=60, detail=s.detail
    )
    # the same at B's public address (hairpin through the CC: judged by A's private source all the same)
    assert _a_reaches_b(s, s.public_ip(s.b))
    # the other way is still closed: web admits port 22 from anywhere, so ask for a port nobody admits
    out = ssh_ok(
        CLIENT_NETNS,
        s.key,
        s.public_ip(s.b),
        f"timeout 8 nc -w 4 {s.a.private_ip} 23 </dev/null 2>&1; echo rc=$?",
    )
    assert "refused" not in out.lower(), out  # dropped by the filter, not refused by A


# -- 4. a CC restart ---------------------------------------------------------------------------------------------


def test_a_cc_restart_rebuilds_the_same_rules_and_ssh_still_works(setup: Setup) -> None:
    s = setup
    netns, name = s.cloud_netns, s.cluster.name
    publics = sorted({s.public_ip(s.a), s.public_ip(s.b)})
    before = cluster_rules(netns, name)
    assert sorted(uplink_addresses(netns, name)) == publics
    since = s.cluster.cc.log_size()
    cc = s.cluster.restart_cc()
    cc.wait_for_log("cloud ready", since=since)
    cc.wait_for_log("view applied", since=since)
    after = cluster_rules(netns, name)
    assert after == before, "\n".join(["before:", *before, "after:", *after])
    assert len(after) == len(set(after)), after  # nothing twice (jumps included)
    assert sorted(uplink_addresses(netns, name)) == publics
    for guest in (s.a, s.b):
        assert wait_for_ssh(CLIENT_NETNS, s.key, s.public_ip(guest), detail=cc.tail) == guest.hostname
    assert _a_reaches_b(s)
    # the restarted CC's metadata service knows its guests again (from the leases)
    for guest in (s.a, s.b):
        got = ssh_ok(CLIENT_NETNS, s.key, s.public_ip(guest), f"wget -q -O - {MD}/meta-data/instance-id")
        assert got == guest.instance_id


# -- 5. revoke -----------------------------------------------------------------------------------------------------


def test_ssh_times_out_after_revoke_and_works_again_after_authorize(setup: Setup) -> None:
    s = setup
    public = s.public_ip(s.a)
    assert ssh_hostname(s, public) == s.a.hostname
    s.cloud.aws(
        "ec2", "revoke-security-group-ingress", "--group-name", "web",
        "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0",
    )  # fmt: skip

    def timed_out() -> bool:
        done = ssh(CLIENT_NETNS, s.key, public, "hostname", connect_timeout=5, timeout=30)
        return done.returncode == 255 and "timed out" in done.stderr

    wait_until(f"ssh to {public} to time out after the revoke", timed_out, deadline=60, detail=s.detail)
    s.cloud.aws(
        "ec2", "authorize-security-group-ingress", "--group-name", "web",
        "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0",
    )  # fmt: skip
    assert wait_for_ssh(CLIENT_NETNS, s.key, public, detail=s.detail, deadline=60) == s.a.hostname


# -- 6. an elastic IP moves --------------------------------------------------------------------------------------


def test_ssh_follows_an_elastic_ip_from_one_instance_to_another(setup: Setup) -> None:
    s = setup
    eip = s.cloud.aws("ec2", "allocate-address")["PublicIp"]
    s.work.joinpath("eip").write_text(eip)
    s.cloud.aws("ec2", "associate-address", "--instance-id", s.a.instance_id, "--public-ip", eip)
    wait_until(
        f"ssh at {eip} to reach A", lambda: ssh_hostname(s, eip) == s.a.hostname, deadline=60, detail=s.detail
    )
    assert s.public_ip(s.a) == eip
    s.cloud.ec2().associate_address(InstanceId=s.b.instance_id, PublicIp=eip, AllowReassociation=True)
    wait_until(
        f"ssh at {eip} to reach B", lambda: ssh_hostname(s, eip) == s.b.hostname, deadline=60, detail=s.detail
    )
    assert s.public_ip(s.b) == eip
    assert ssh_ok(CLIENT_NETNS, s.key, eip, f"wget -q -O - {MD}/meta-data/public-ipv4") == eip


# -- 7. terminate --------------------------------------------------------------------------------------------------


def test_terminate_leaves_no_rule_nat_entry_or_address_behind(setup: Setup) -> None:
    s = setup
    netns, name = s.cloud_netns, s.cluster.name
    eip_file = s.work / "eip"
    eip = eip_file.read_text() if eip_file.exists() else None
    publics = {str(s.describe(g).get("PublicIpAddress") or "") for g in (s.a, s.b)} - {""}
    addresses = {s.a.private_ip, s.b.private_ip} | publics | s.launch_publics | ({eip} if eip else set())
    ids = [s.a.instance_id, s.b.instance_id]
    s.cloud.aws("ec2", "terminate-instances", "--instance-ids", *ids)
    s.cloud.wait_states(ids, "terminated")
    names = ChainNames.of(name)

    def leftovers() -> list[str]:
        found = [
            line
            for line in iptables_save(netns).splitlines()
            if any(re.search(re.escape(ip) + r"(/32|:|$|\s)", line) for ip in addresses)
        ]
        found += [f"uplink address {ip}" for ip in uplink_addresses(netns, name)]
        # no instance is in web or db any more: their chains go too
        found += [line for line in cluster_rules(netns, name) if names.group_prefix in line]
        return found

    wait_until(
        "the CC to drop every rule, NAT entry and address of the terminated instances",
        lambda: not leftovers(),
        deadline=60,
        detail=lambda: "\n".join(leftovers()),
    )
    # the CC's own chains stay (the subnet is still closed to the outside), empty of these instances
    assert any(f":{names.cluster}" in line for line in cluster_rules(netns, name))

    # the pool addresses they had are back in the pool (the admin's verbose view: held by nobody)
    pool_addresses = (publics | s.launch_publics) - {eip}
    assert len(s.launch_publics) == 2

    def holders() -> dict[str, str]:
        rows = s.cloud.aws("ec2", "describe-addresses", "--public-ips", "verbose")["Addresses"]
        return {a["PublicIp"]: str(a.get("InstanceId")) for a in rows if a["PublicIp"] in pool_addresses}

    wait_until(
        "the terminated instances' public addresses back in the pool",
        lambda: holders() == dict.fromkeys(pool_addresses, "nobody"),
        deadline=60,
        detail=lambda: str(holders()),
    )
    if eip:
        described = s.cloud.aws("ec2", "describe-addresses", "--public-ips", eip)["Addresses"][0]
        assert not described.get("InstanceId"), described
        s.cloud.aws("ec2", "release-address", "--public-ip", eip)
