"""Issue 14's hosts as network namespaces: the README's several-hosts deployment, built on one machine by
scripts/multihost, proven with real guests.

The layout (helpers.multihost; the script's header has the details): a cloud host (CLC + Walrus), two
cluster hosts (CC + SC each, zones <prefix>-1a and -1b) and two node hosts per cluster, each NC with its own
libvirtd; every host a network namespace with its own address on a LAN bridge and its own data dir, joined
with `euca admin register-*` tokens. Guests reach their CC's bridge over a VXLAN tunnel per node; the CC
filters and NATs (MANAGED-NOVLAN); the SC exports volumes over NBD/TCP on the LAN. The outside is the
layout's client namespace, which reaches the public pool over the LAN.

Four guests of the default image (TCG), one per node host (nodes offer one core: nc.cores=1), serve the
whole module, in order:
1. Every node runs one; each answers ssh at its public address from the client namespace.
2. The security group is enforced across nodes: the guest on node a1 cannot ping a2's guest (the group
   admits tcp/22 only) until the group admits itself as a source (then it can, through the CC's bridge);
   ssh to guests on a1 and b2 times out once tcp/22 is revoked and works again once authorized.
3. A volume of zone 1a (bytes on cluster host a's SC) attached to the guest on node a2: the guest writes
   it, and the bytes are in the SC's file on the cluster host; detached and deleted.
4. An elastic IP associated with a1's guest, then moved to a2's: ssh at it follows.
5. Node a2's NC killed and started again at once: its guest runs on throughout and is adopted.
6. Node b2's NC killed: its node goes down, its instance ends as lost after clc.node_lost_timeout (lowered
   for the test) while the others keep running; started again: the node is up and the lost guest's
   domain is gone from its libvirtd.

The cloud is taken down by `scripts/multihost down` at the end, whatever happened. Waits poll with a long
deadline that only stops a hang; nothing asserts how long things take.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.guest_ssh import ssh, ssh_ok, wait_for_ssh, write_private_key
from helpers.multihost import MultiHost, multihost_cloud
from helpers.onebox_cloud import INSTANCE_TYPE
from helpers.polling import wait_until
from helpers.qemu_host import unusable_reason

PREFIX = "mhe"  # namespaces mhe-cloud, mhe-cc-a, ... (scripts/multihost's own default is mh)
LAN = "10.184.0"
LOST_TIMEOUT = 40  # clc.node_lost_timeout for the test (the default is 600 s)


def _unusable() -> str | None:
    reason = unusable_reason()
    if reason is not None:
        return reason
    if os.geteuid() != 0:
        return "needs root (network namespaces, libvirtd per node)"
    for tool in ("ssh", "virsh", "libvirtd", "virtlogd", "unshare", "qemu-storage-daemon"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} is not installed (scripts/install-deps.sh)"
    if subprocess.run(["ip", "netns", "exec", "mhe-cloud", "true"], capture_output=True).returncode == 0:
        return "namespace mhe-cloud exists (another run? MH_PREFIX=mhe scripts/multihost down removes it)"
    return None


_REASON = _unusable()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture(scope="module")
def mh() -> Iterator[MultiHost]:
    with multihost_cloud(
        PREFIX,
        LAN,
        cloud_set=f"clc.poll_interval=1 clc.node_lost_timeout={LOST_TIMEOUT}",
        cc_set="cc.poll_interval=1",
        nc_set="nc.cores=1",
    ) as m:
        yield m


@dataclass
class Guest:
    instance_id: str
    node: str  # a1, a2, b1, b2
    private_ip: str
    hostname: str


@dataclass
class Setup:
    mh: MultiHost
    key: Path
    guests: dict[str, Guest]  # by node

    def ec2(self) -> Any:
        return self.mh.cloud.ec2()

    def public_ip(self, guest: Guest) -> str:
        ip = self.mh.cloud.describe([guest.instance_id])[guest.instance_id].get("PublicIpAddress")
        assert ip, f"{guest.instance_id} has no public address"
        return str(ip)

    def ssh_ok(self, guest: Guest, command: str) -> str:
        return ssh_ok(self.mh.client_netns, self.key, self.public_ip(guest), command)

    def detail(self, *hosts: str) -> str:
        parts = [self.mh.tail("cloud", "cloud")]
        for h in hosts:
            parts.append(self.mh.tail(f"cluster-{h}", "cc") if len(h) == 1 else self.mh.tail(f"nc-{h}", "nc"))
        return "\n".join(parts)


@pytest.fixture(scope="module")
def setup(mh: MultiHost, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    work = tmp_path_factory.mktemp("multihost-e2e")
    cloud = mh.cloud
    ec2 = cloud.ec2()
    key = write_private_key(work / "k.pem", ec2.create_key_pair(KeyName="k")["KeyMaterial"])
    ec2.create_security_group(GroupName="ssh", Description="ssh from anywhere")
    ec2.authorize_security_group_ingress(
        GroupName="ssh", IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="0.0.0.0/0"
    )
    ids: list[str] = []
    for zone in (f"{PREFIX}-1a", f"{PREFIX}-1b"):
        cloud.wait_capacity(zone, 2)
        reply = ec2.run_instances(
            ImageId=cloud.emi, MinCount=2, MaxCount=2, InstanceType=INSTANCE_TYPE, KeyName="k",
            SecurityGroups=["ssh"], Placement={"AvailabilityZone": zone},
        )  # fmt: skip
        ids += [i["InstanceId"] for i in reply["Instances"]]
    running = cloud.wait_states(ids, "running")
    where = {i: node.removeprefix("nc-") for node, (_, listed) in mh.nodes().items() for i in listed}
    guests: dict[str, Guest] = {}
    for i in ids:
        d = running[i]
        guests[where[i]] = Guest(i, where[i], d["PrivateIpAddress"], d["PrivateDnsName"].split(".", 1)[0])
    s = Setup(mh, key, guests)
    for g in guests.values():
        cloud.wait_console(g.instance_id, "euca-guest: sshd started")
    return s


# -- 1. a guest on every node ------------------------------------------------------------------------------------


def test_every_node_host_runs_a_guest_reachable_by_ssh(setup: Setup) -> None:
    assert sorted(setup.guests) == ["a1", "a2", "b1", "b2"], setup.mh.nodes()
    for g in setup.guests.values():
        public = setup.public_ip(g)
        assert (
            wait_for_ssh(setup.mh.client_netns, setup.key, public, detail=lambda: setup.detail("a", "b"))
            == g.hostname
        )
    # Each guest's disks are in its own node host's data dir, its domain in that node's own libvirtd.
    for node, g in setup.guests.items():
        assert setup.mh.domains(node) == [g.instance_id]
        assert (setup.mh.dir / f"nc-{node}" / "data" / "nc" / "instances" / g.instance_id).is_dir()


# -- 2. security groups across nodes -----------------------------------------------------------------------------


def _ping(setup: Setup, source: Guest, target: Guest) -> bool:
    out = setup.ssh_ok(source, f"ping -c 1 -W 2 {target.private_ip} >/dev/null 2>&1; echo rc=$?")
    return "rc=0" in out


def test_security_group_is_enforced_between_and_on_guests_of_different_nodes(setup: Setup) -> None:
    a1, a2, b2 = setup.guests["a1"], setup.guests["a2"], setup.guests["b2"]
    ec2 = setup.ec2()
    # a1 -> a2 crosses the CC's bridge (node a1's tunnel in, node a2's out): the group admits tcp/22 only.
    assert not _ping(setup, a1, a2)
    group_id = ec2.describe_security_groups(GroupNames=["ssh"])["SecurityGroups"][0]["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupName="ssh", IpPermissions=[{"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1,
                                          "UserIdGroupPairs": [{"GroupId": group_id}]}],
    )  # fmt: skip
    wait_until(
        "a1's guest to ping a2's once the group admits itself", lambda: _ping(setup, a1, a2), deadline=60
    )
    # From outside: ssh to guests on two nodes of two clusters stops with tcp/22 revoked, and comes back.
    publics = [setup.public_ip(a1), setup.public_ip(b2)]
    ec2.revoke_security_group_ingress(
        GroupName="ssh", IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="0.0.0.0/0"
    )
    for public in publics:

        def refused(address: str = public) -> bool:
            done = ssh(setup.mh.client_netns, setup.key, address, "hostname", connect_timeout=5, timeout=30)
            return done.returncode != 0

        wait_until(
            f"ssh to {public} to fail after the revoke",
            refused,
            deadline=60,
            detail=lambda: setup.detail("a", "b"),
        )
    ec2.authorize_security_group_ingress(
        GroupName="ssh", IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="0.0.0.0/0"
    )
    for public, g in zip(publics, (a1, b2), strict=True):
        assert wait_for_ssh(setup.mh.client_netns, setup.key, public, deadline=60) == g.hostname


# -- 3. a volume across hosts ------------------------------------------------------------------------------------


def test_a_volume_on_the_cluster_host_is_attached_to_a_guest_on_a_node_host(setup: Setup) -> None:
    a2 = setup.guests["a2"]
    ec2 = setup.ec2()
    volume_id = ec2.create_volume(AvailabilityZone=f"{PREFIX}-1a", Size=1)["VolumeId"]

    def state() -> str:
        return str(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"])

    wait_until(f"{volume_id} available", lambda: state() == "available", detail=lambda: setup.detail("a"))
    ec2.attach_volume(VolumeId=volume_id, InstanceId=a2.instance_id, Device="/dev/sdf")

    def attached() -> bool:
        v = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
        return any(a["State"] == "attached" for a in v.get("Attachments", []))

    wait_until(f"{volume_id} attached to {a2.instance_id}", attached, detail=lambda: setup.detail("a", "a2"))
    # The node's QEMU reaches the SC's NBD export on the cluster host's LAN address.
    xml = setup.mh.domain_xml("a2", a2.instance_id)
    assert "protocol='nbd'" in xml and f"name='{LAN}.20'" in xml, xml
    find = (
        "for d in /sys/block/vd*; do "
        f'[ "$(cat $d/serial 2>/dev/null)" = {volume_id} ] && echo /dev/${{d##*/}}; done; true'
    )
    disk = wait_until(
        f"{volume_id} in the guest", lambda: setup.ssh_ok(a2, find).strip() or None, deadline=120
    )
    marker = f"written-by-{a2.instance_id}-on-node-a2"
    setup.ssh_ok(a2, f"printf '{marker}' > {disk} && sync")
    assert marker in setup.ssh_ok(a2, f"head -c 64 {disk}")
    # The bytes live on the cluster host, in the SC's file.
    files = [f for f in (setup.mh.dir / "cluster-a" / "sc").rglob(f"{volume_id}*") if f.is_file()]
    assert files, f"no file of {volume_id} under the SC's data dir"
    assert any(f.read_bytes()[:64].startswith(marker.encode()) for f in files)
    ec2.detach_volume(VolumeId=volume_id)
    wait_until(
        f"{volume_id} detached", lambda: state() == "available", detail=lambda: setup.detail("a", "a2")
    )
    ec2.delete_volume(VolumeId=volume_id)


# -- 4. an elastic IP between nodes ------------------------------------------------------------------------------


def test_an_elastic_ip_moves_between_guests_on_different_nodes(setup: Setup) -> None:
    a1, a2 = setup.guests["a1"], setup.guests["a2"]
    ec2 = setup.ec2()
    allocation = ec2.allocate_address(Domain="standard")
    eip = allocation["PublicIp"]
    ec2.associate_address(PublicIp=eip, InstanceId=a1.instance_id)
    assert (
        wait_for_ssh(setup.mh.client_netns, setup.key, eip, deadline=60, detail=lambda: setup.detail("a"))
        == a1.hostname
    )
    ec2.associate_address(PublicIp=eip, InstanceId=a2.instance_id, AllowReassociation=True)

    def on_a2() -> bool:
        done = ssh(setup.mh.client_netns, setup.key, eip, "hostname", connect_timeout=5, timeout=30)
        return done.returncode == 0 and done.stdout.strip() == a2.hostname

    wait_until(f"ssh at {eip} to reach a2's guest", on_a2, deadline=60, detail=lambda: setup.detail("a"))
    # The guest it left has a public address from the pool again, and answers there.
    again = setup.public_ip(a1)
    assert again != eip
    assert wait_for_ssh(setup.mh.client_netns, setup.key, again, deadline=60) == a1.hostname
    ec2.disassociate_address(PublicIp=eip)
    ec2.release_address(PublicIp=eip)


# -- 5./6. a node host stopped ------------------------------------------------------------------------------------


def _state(setup: Setup, guest: Guest) -> dict[str, Any]:
    return setup.mh.cloud.describe([guest.instance_id])[guest.instance_id]


def test_a_node_restarted_in_time_adopts_its_guest(setup: Setup) -> None:
    a2 = setup.guests["a2"]
    setup.mh.script("kill-nc", "a2")
    wait_until("nc-a2 down", lambda: setup.mh.services().get("nc-a2") == "down", deadline=60)
    setup.mh.script("start-nc", "a2")
    wait_until("nc-a2 up again", lambda: setup.mh.services().get("nc-a2") == "up", deadline=120)
    wait_until("nc-a2 to list its guest", lambda: a2.instance_id in setup.mh.nodes()["nc-a2"][1], deadline=60)
    assert _state(setup, a2)["State"]["Name"] == "running"
    assert setup.ssh_ok(a2, "hostname").strip() == a2.hostname


def test_a_stopped_node_loses_its_guest_after_the_timeout_and_the_rest_run_on(setup: Setup) -> None:
    b2 = setup.guests["b2"]
    setup.mh.script("kill-nc", "b2")
    wait_until("nc-b2 down", lambda: setup.mh.services().get("nc-b2") == "down", deadline=60)
    lost = wait_until(
        f"{b2.instance_id} ended as lost",
        lambda: (d := _state(setup, b2))["State"]["Name"] == "terminated" and d,
        deadline=LOST_TIMEOUT + 120,
        detail=lambda: setup.detail("b"),
    )
    assert "stopped reporting" in lost["StateReason"]["Message"]
    for node in ("a1", "a2", "b1"):
        g = setup.guests[node]
        assert _state(setup, g)["State"]["Name"] == "running", node
        assert setup.ssh_ok(g, "hostname").strip() == g.hostname
    # Back: the node is up again, and the guest the cloud has ended is ended on it too.
    setup.mh.script("start-nc", "b2")
    wait_until("nc-b2 up again", lambda: setup.mh.services().get("nc-b2") == "up", deadline=120)
    wait_until(
        f"{b2.instance_id}'s domain gone from nc-b2's libvirtd",
        lambda: b2.instance_id not in setup.mh.domains("b2"),
        deadline=120,
        detail=lambda: setup.detail("b", "b2"),
    )
