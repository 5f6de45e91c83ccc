"""Issue 4's proof with real processes, real clients and real guests.

One cloud for the module, started as a user starts it: `euca --role all` on loopback ports with its own data
dir, which at first start registers the default image (Debian cloud kernel, busybox initramfs). The clients
are the aws CLI (run from a shell that sourced the credentials' eucarc) and boto3. Guests are QEMU (TCG)
under qemu:///system; when libvirtd runs in the `euca` namespace (scripts/setup-host), every cluster gets
a bridge of its own there, so the CC's dnsmasq hands guests their addresses.

1. One box: two instances of the default emi (one from the aws CLI, one from boto3) run, show their boot
   marker in GetConsoleOutput and their address lease; one reboots (the marker again); both terminate and
   the node is left with no domain, instance directory, overlay or console file.
2. A second cluster in processes of its own (`euca --role cc --join TOKEN`, `euca --role nc --join TOKEN`,
   their own data dirs, after `euca admin register-cluster/register-node` on the CLC host) is a second zone
   in DescribeAvailabilityZones, and an instance placed there with Placement.AvailabilityZone runs on it.
3. kill -9 of that NC: the guest runs on, the CLC keeps reporting it running; the NC started again finds
   it, and reboots it on request.
4. The CC and NC listeners refuse what is not the registered component that may call them: a certificate
   from another CA (even with the CLC's subject), none at all, plain HTTP, a user's certificate from the
   cloud CA, a component of the wrong role; the instance they tried to terminate still runs.

Polls wait with a long deadline (HANG_GUARD) that only stops a hang; nothing asserts how long things take.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
from cryptography import x509

from euca.core.pki import CloudCA, cert_cluster
from euca.images import bootimage as bi
from euca.protocol import cluster as proto
from helpers.onebox_cloud import (
    INSTANCE_TYPE,
    Cloud,
    GuestBridges,
    SecondCluster,
    domain_names,
    start_cloud,
    start_second_cluster,
)
from helpers.polling import wait_until
from helpers.qemu_host import unusable_reason

_REASON = unusable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture(scope="module")
def cloud(boot_image: bi.BootImage, guest_bridges: GuestBridges) -> Iterator[Cloud]:
    with start_cloud(guest_bridges) as c:
        yield c


@pytest.fixture(scope="module")
def second_cluster(cloud: Cloud, guest_bridges: GuestBridges) -> Iterator[SecondCluster]:
    with start_second_cluster(cloud, guest_bridges) as second:
        yield second


def _marker(instance_id: str) -> str:
    return f"{bi.BOOT_MARKER} {instance_id}"


def _assert_node_clean(nc_data: Path, instance_ids: list[str]) -> None:
    """No domain, instance directory, overlay or console file of these instances is left on the node."""
    instances_dir = nc_data / "nc" / "instances"
    left = wait_until(
        f"the node to drop {instance_ids}",
        lambda: (
            True
            if not (set(instance_ids) & domain_names())
            and not any((instances_dir / i).exists() for i in instance_ids)
            else None
        ),
        deadline=120,
        detail=lambda: f"domains: {sorted(domain_names())}; dirs: {sorted(os.listdir(instances_dir))}",
    )
    assert left
    found = [p for p in nc_data.rglob("*") if p.name in ("console.log", "root.qcow2") or p.suffix == ".qcow2"]
    assert found == [], found


# -- 1. one box --------------------------------------------------------------------------------------------------


def test_one_box_runs_reboots_and_terminates_two_guests_of_the_default_image(cloud: Cloud) -> None:
    ec2 = cloud.ec2()
    zones = {z["ZoneName"]: z["State"] for z in ec2.describe_availability_zones()["AvailabilityZones"]}
    assert zones.get(cloud.zone) == "available", zones
    cloud.wait_capacity(cloud.zone, 2)
    image = ec2.describe_images(ImageIds=[cloud.emi])["Images"][0]
    assert (image["KernelId"], image["RamdiskId"], image["Public"]) == (cloud.eki, cloud.eri, True)

    # One instance from the aws CLI, one from boto3.
    by_cli = cloud.aws("ec2", "run-instances", "--image-id", cloud.emi, "--instance-type", INSTANCE_TYPE)
    first = by_cli["Instances"][0]
    a = first["InstanceId"]
    cloud.launched.add(a)
    assert first["State"]["Name"] == "pending"
    assert (first["ImageId"], first["KernelId"], first["RamdiskId"]) == (cloud.emi, cloud.eki, cloud.eri)
    by_boto = ec2.run_instances(ImageId=cloud.emi, MinCount=1, MaxCount=1, InstanceType=INSTANCE_TYPE)
    b = by_boto["Instances"][0]["InstanceId"]
    cloud.launched.add(b)
    ids = [a, b]

    running = cloud.wait_states(ids, "running")
    for i in ids:
        assert running[i]["Placement"]["AvailabilityZone"] == cloud.zone
        assert running[i]["InstanceType"] == INSTANCE_TYPE
    # The guests came up: their boot marker (with their own instance id) through GetConsoleOutput, read
    # with the aws CLI for one and boto3 for the other.
    wait_until(
        f"the boot marker of {a} through the aws CLI",
        lambda: (
            _marker(a) in (cloud.aws("ec2", "get-console-output", "--instance-id", a) or {}).get("Output", "")
        ),
        detail=cloud.tail,
    )
    text_b = cloud.wait_console(b, _marker(b))
    assert "Linux version" in text_b
    if cloud.bridge is not None:
        # The CC's dnsmasq gave each guest the address DescribeInstances shows.
        for i in ids:
            cloud.wait_console(i, f"eth0 bound {running[i]['PrivateIpAddress']}/")

    # Reboot one: it boots again (a second marker), and stays running.
    cloud.aws("ec2", "reboot-instances", "--instance-ids", a)
    cloud.wait_console(a, _marker(a), count=2)
    assert cloud.describe([a])[a]["State"]["Name"] == "running"
    assert cloud.console(b).count(_marker(b)) == 1

    # Terminate both: nothing of them stays on the node.
    ec2.terminate_instances(InstanceIds=ids)
    cloud.wait_states(ids, "terminated")
    _assert_node_clean(cloud.data_dir, ids)


# -- 2. a second cluster in processes of its own -------------------------------------------------------------------


@pytest.fixture(scope="module")
def zone2_instance(cloud: Cloud, second_cluster: SecondCluster) -> str:
    """An instance placed in the second cluster's zone with boto3, running with its boot marker shown."""
    # The zone is there once the CLC has heard from its CC, and has room once that CC has heard from its node.
    cloud.wait_capacity(second_cluster.name, 1, detail=second_cluster.cc.tail)
    reply = cloud.ec2().run_instances(
        ImageId=cloud.emi,
        MinCount=1,
        MaxCount=1,
        InstanceType=INSTANCE_TYPE,
        Placement={"AvailabilityZone": second_cluster.name},
    )
    instance_id: str = reply["Instances"][0]["InstanceId"]
    second_cluster.launched.add(instance_id)
    cloud.wait_states([instance_id], "running")
    cloud.wait_console(instance_id, _marker(instance_id))
    return instance_id


def test_a_second_cluster_is_a_second_zone_and_runs_the_instance_placed_there(
    cloud: Cloud, second_cluster: SecondCluster, zone2_instance: str
) -> None:
    zones = cloud.aws("ec2", "describe-availability-zones")["AvailabilityZones"]
    assert {(z["ZoneName"], z["State"]) for z in zones} >= {
        (cloud.zone, "available"),
        (second_cluster.name, "available"),
    }, zones
    described = cloud.describe([zone2_instance])[zone2_instance]
    assert described["Placement"]["AvailabilityZone"] == second_cluster.name
    in_zone = cloud.aws(
        "ec2", "describe-instances", "--filters", f"Name=availability-zone,Values={second_cluster.name}"
    )
    assert [i["InstanceId"] for r in in_zone["Reservations"] for i in r["Instances"]] == [zone2_instance]
    # It runs on the second cluster's node (its own process and data dir), not on the one-box's.
    assert (second_cluster.nc_dir / "nc" / "instances" / zone2_instance).is_dir()
    assert not (cloud.data_dir / "nc" / "instances" / zone2_instance).exists()
    services = cloud.admin("describe-services")
    assert f"\tnode\t{second_cluster.node}\t{second_cluster.name}\t" in services, services


# -- 3. kill -9 of the NC --------------------------------------------------------------------------------------------


def _node_state(cloud: Cloud, node: str) -> str | None:
    for line in cloud.admin("describe-services").splitlines():
        fields = line.split("\t")
        if fields[:3] == ["SERVICE", "node", node]:
            return fields[5]
    return None


def test_an_nc_killed_and_started_again_keeps_its_instance(
    cloud: Cloud, second_cluster: SecondCluster, zone2_instance: str
) -> None:
    second_cluster.nc.kill9()
    # The guest is libvirt's, not the NC's: it runs on without its NC.
    assert zone2_instance in domain_names()
    wait_until(
        f"node {second_cluster.node} to be reported down",
        lambda: _node_state(cloud, second_cluster.node) == "down",
        detail=lambda: cloud.admin("describe-services"),
    )
    # A node that does not answer is not an instance that ended.
    assert cloud.describe([zone2_instance])[zone2_instance]["State"]["Name"] == "running"

    since = second_cluster.nc.log_size()
    nc = second_cluster.restart_nc()
    nc.wait_for_log("cloud ready", since=since)
    wait_until(
        f"node {second_cluster.node} to be up again",
        lambda: _node_state(cloud, second_cluster.node) == "up",
        detail=lambda: f"{cloud.admin('describe-services')}\n{nc.tail()}",
    )
    described = cloud.describe([zone2_instance])[zone2_instance]
    assert described["State"]["Name"] == "running"
    assert described["Placement"]["AvailabilityZone"] == second_cluster.name
    assert _marker(zone2_instance) in cloud.console(zone2_instance)
    # The new NC drives the guest it found: a reboot through the API boots it again.
    before = cloud.console(zone2_instance).count(_marker(zone2_instance))
    cloud.ec2().reboot_instances(InstanceIds=[zone2_instance])
    cloud.wait_console(zone2_instance, _marker(zone2_instance), count=before + 1)
    assert cloud.describe([zone2_instance])[zone2_instance]["State"]["Name"] == "running"


# -- 4. strangers on the cluster listeners ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """A client identity for the cluster listeners: a certificate and key (or none)."""

    what: str
    cert: Path | None = None
    key: Path | None = None


def _call(url: str, message: msgspec.Struct, caller: Caller, ca_file: Path) -> tuple[int, bytes] | str:
    """POST the cluster message as `caller`; (status, body), or the transport error when the TLS listener
    did not take the connection."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = False
    if caller.cert is not None:
        ctx.load_cert_chain(str(caller.cert), str(caller.key))
    path, body = proto.encode_request(message)
    try:
        with httpx.Client(verify=ctx, timeout=30) as client:
            r = client.post(url + path, content=body, headers={"Content-Type": "application/json"})
    except httpx.TransportError as e:
        return f"{type(e).__name__}: {e}"
    return r.status_code, r.content


def _assert_refused(result: tuple[int, bytes] | str, who: str) -> None:
    if isinstance(result, str):
        return  # the handshake (or the connection) was refused
    status, body = result
    assert status == 403, f"{who}: answered {status} {body[:300]!r}"
    assert msgspec.json.decode(body, type=proto.Fault).code == "Unauthorized", body


def _component(directory: Path, role: str) -> Caller:
    return Caller(f"{role} of {directory}", directory / f"{role}-cert.pem", directory / f"{role}-key.pem")


def test_cluster_listeners_refuse_what_is_not_their_registered_caller(
    cloud: Cloud, second_cluster: SecondCluster, zone2_instance: str, tmp_path: Path
) -> None:
    ca_file = cloud.components / "cloud-cert.pem"
    cc2 = f"https://127.0.0.1:{second_cluster.cc_port}"
    nc2 = f"https://127.0.0.1:{second_cluster.nc_port}"

    # Control: the registered CLC is answered by the CC, and that CC by its NC.
    clc = _component(cloud.components, "clc")
    result = _call(cc2, proto.DescribeInstances([zone2_instance]), clc, ca_file)
    assert not isinstance(result, str) and result[0] == 200, result
    cc = _component(second_cluster.cc_dir / "pki" / "components", "cc")
    result = _call(nc2, proto.NcDescribeInstances([zone2_instance]), cc, ca_file)
    assert not isinstance(result, str) and result[0] == 200, result

    # Another CA's certificates carrying the very subjects of the registered components.
    foreign = CloudCA.load_or_create(tmp_path / "foreign-ca")
    impostors = {}
    for role, name in (("clc", "clc"), ("cc", second_cluster.name)):
        key, cert = foreign.issue_component(role, name, ["127.0.0.1"])
        (tmp_path / f"{role}-key.pem").write_bytes(key)
        (tmp_path / f"{role}-cert.pem").write_bytes(cert)
        impostors[role] = Caller(
            f"{role} cert from another CA", tmp_path / f"{role}-cert.pem", tmp_path / f"{role}-key.pem"
        )
    # A certificate the cloud CA did issue, to a user (bundle signing), and components of the wrong role.
    creds = cloud.creds_dir
    user = Caller("the admin user's certificate", creds / "cert.pem", creds / "pk.pem")
    nc_cert = _component(second_cluster.nc_dir / "pki" / "components", "nc")
    nobody = Caller("no client certificate")

    terminate_cc = proto.TerminateInstances([zone2_instance])
    terminate_nc = proto.NcTerminateInstance(zone2_instance)
    for caller in (impostors["clc"], nobody, user, nc_cert, cc):
        _assert_refused(_call(cc2, terminate_cc, caller, ca_file), f"CC <- {caller.what}")
    for caller in (impostors["cc"], nobody, user, clc, nc_cert):
        _assert_refused(_call(nc2, terminate_nc, caller, ca_file), f"NC <- {caller.what}")
    # A valid certificate of the wrong role gets past TLS and is refused by role, with a Fault.
    for url, message, caller in ((cc2, terminate_cc, nc_cert), (nc2, terminate_nc, clc)):
        result = _call(url, message, caller, ca_file)
        assert not isinstance(result, str) and result[0] == 403, (caller.what, result)
    # Plain HTTP on a mutual-TLS port.
    for url in (cc2, nc2):
        try:
            r = httpx.post(
                url.replace("https:", "http:") + "/cluster/DescribeInstances", content=b"{}", timeout=30
            )
            assert r.status_code != 200, r.text
        except httpx.TransportError:
            pass

    # None of them reached the instance.
    assert cloud.describe([zone2_instance])[zone2_instance]["State"]["Name"] == "running"
    assert zone2_instance in domain_names()
    result = _call(cc2, proto.DescribeInstances([zone2_instance]), clc, ca_file)
    assert not isinstance(result, str) and result[0] == 200, result


def test_an_nc_refuses_the_cc_of_another_cluster(cloud: Cloud, second_cluster: SecondCluster) -> None:
    """A node's certificate names its cluster (the one-box's NC: issued at start; the joined NC: signed at
    join from `register-node --cluster`), and its NC takes calls from that cluster's CC only — not from the
    CC of another cluster of the same cloud, though its certificate is valid and of the right role."""
    ca_file = cloud.components / "cloud-cert.pem"
    nc2_components = second_cluster.nc_dir / "pki" / "components"
    for components, cluster in ((cloud.components, cloud.cluster), (nc2_components, second_cluster.name)):
        cert = x509.load_pem_x509_certificate((components / "nc-cert.pem").read_bytes())
        assert cert_cluster(cert) == cluster, components
    one_box_cc = _component(cloud.components, "cc")
    cc2 = _component(second_cluster.cc_dir / "pki" / "components", "cc")
    nc1 = f"https://127.0.0.1:{cloud.nc_port}"
    nc2 = f"https://127.0.0.1:{second_cluster.nc_port}"
    # Each NC answers its own cluster's CC ...
    for url, caller in ((nc1, one_box_cc), (nc2, cc2)):
        result = _call(url, proto.NcDescribeInstances(), caller, ca_file)
        assert not isinstance(result, str) and result[0] == 200, (caller.what, result)
    # ... and refuses the other's, past the TLS handshake, with a Fault and one log line.
    since = second_cluster.nc.log_size()
    for url, caller in ((nc2, one_box_cc), (nc1, cc2)):
        result = _call(url, proto.NcDescribeInstances(), caller, ca_file)
        assert not isinstance(result, str), (caller.what, result)
        _assert_refused(result, f"NC at {url} <- {caller.what}")
    second_cluster.nc.wait_for_log(f"cluster call refused role=nc caller=cc/{cloud.cluster}", since=since)
    cloud.proc.wait_for_log(f"cluster call refused role=nc caller=cc/{second_cluster.name}")
