"""The instance metadata service's answers (pure): the EC2 meta-data tree of one instance, its user data,
and IMDSv2 session tokens. The server (imds.py) finds the instance by the request's source address and
hands its `MetadataRecord` here; another instance's data is never reachable, since the record is chosen
by the address, not by anything in the request.

IMDSv1 (plain GET) and IMDSv2 (PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds, 1..21600,
then GETs carrying X-aws-ec2-metadata-token) both work, as on EC2 with `HttpTokens=optional`; a GET with a
token that is invalid, expired or another instance's answers 401. A token PUT carrying X-Forwarded-For
answers 403 (EC2 refuses proxied token requests). The hop limit (1) is the server's: the IP TTL of its
answers.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from euca.protocol.cluster import InstanceIam, InstanceMetadata, InstanceSpec, NetworkView

TOKEN_TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
# The API versions answered at / (EC2's list up to the ones cloud-init asks for: it tries 2021-03-23,
# 2018-09-24, 2016-09-02, then 2009-04-04, each with <version>/meta-data/instance-id). Every version serves
# the same tree; others answer 404, as on EC2.
VERSIONS = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "latest",
)
_VERSIONS = frozenset(VERSIONS)
# The guest's disks as the NC attaches them (nc/domain.py): root on vda, ephemeral0 on vdb. Named as the
# guest sees them, so cloud-init's device lookup finds them without its sd->vd remapping.
DEFAULT_BLOCK_DEVICES = (("ami", "/dev/vda"), ("root", "/dev/vda"), ("ephemeral0", "vdb"))


@dataclass(frozen=True)
class MetadataRecord:
    """What the metadata service knows of one instance. Fields the CC does not know (after a restart it
    has only what the nodes and the CLC's view say) are None and their keys absent."""

    instance_id: str
    local_ipv4: str
    mac: str
    zone: str
    public_ipv4: str | None = None
    reservation_id: str | None = None
    image_id: str | None = None
    instance_type: str | None = None
    launch_index: int | None = None
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    key_name: str | None = None
    public_key: str | None = None
    user_data: bytes | None = None
    security_groups: tuple[str, ...] | None = None  # names
    manifest_path: str | None = None
    block_devices: tuple[tuple[str, str], ...] = DEFAULT_BLOCK_DEVICES
    iam: InstanceIam | None = None  # its instance profile and role credentials (issue 12)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()


NOT_FOUND = Answer(404, b"Not Found\n")


def private_dns_name(ip: str) -> str:
    """As the CLC names it in DescribeInstances (PrivateDnsName)."""
    return f"euca-{ip.replace('.', '-')}.eucalyptus.internal"


def public_dns_name(ip: str) -> str:
    """As the CLC names it in DescribeInstances (PublicDnsName)."""
    return f"euca-{ip.replace('.', '-')}.eucalyptus.localhost"


def meta_data(r: MetadataRecord) -> dict[str, str]:
    """The leaves of /latest/meta-data/ by path (directories are derived from them)."""
    tree: dict[str, str] = {
        "instance-id": r.instance_id,
        "local-ipv4": r.local_ipv4,
        "local-hostname": private_dns_name(r.local_ipv4),
        "hostname": private_dns_name(r.local_ipv4),
        "mac": r.mac,
        "placement/availability-zone": r.zone,
        "ami-manifest-path": r.manifest_path or "(unknown)",
    }
    tree.update({f"block-device-mapping/{name}": device for name, device in r.block_devices})
    optional = {
        "public-ipv4": r.public_ipv4,
        "public-hostname": public_dns_name(r.public_ipv4) if r.public_ipv4 else None,
        "reservation-id": r.reservation_id,
        "ami-id": r.image_id,
        "instance-type": r.instance_type,
        "ami-launch-index": None if r.launch_index is None else str(r.launch_index),
        "kernel-id": r.kernel_id,
        "ramdisk-id": r.ramdisk_id,
        "security-groups": None if r.security_groups is None else "\n".join(r.security_groups),
    }
    tree.update({k: v for k, v in optional.items() if v is not None})
    if r.public_key:
        tree["public-keys/0/openssh-key"] = r.public_key.strip() + "\n"
    if r.iam is not None:
        tree.update(iam_tree(r.iam))
    return tree


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def iam_tree(iam: InstanceIam) -> dict[str, str]:
    """meta-data/iam/: `info` (the profile) and `security-credentials/ROLE` (the role's temporary
    credentials), as EC2 words them (JSON; AWS SDKs read these fields)."""
    info = {
        "Code": "Success",
        "LastUpdated": _iso(iam.issued),
        "InstanceProfileArn": iam.profile_arn,
        "InstanceProfileId": iam.profile_id,
    }
    tree = {"iam/info": json.dumps(info, indent=2)}
    if iam.role_name and iam.access_key_id and iam.secret_key and iam.token and iam.expires is not None:
        credentials = {
            "Code": "Success",
            "LastUpdated": _iso(iam.issued),
            "Type": "AWS-HMAC",
            "AccessKeyId": iam.access_key_id,
            "SecretAccessKey": iam.secret_key,
            "Token": iam.token,
            "Expiration": _iso(iam.expires),
        }
        tree[f"iam/security-credentials/{iam.role_name}"] = json.dumps(credentials, indent=2)
    return tree


def _listing(tree: dict[str, str], prefix: str) -> list[str] | None:
    """The entries under directory `prefix` ("" for the top), directories with a trailing slash."""
    entries: dict[str, None] = {}
    for path in tree:
        if prefix and not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        head, sep, _ = rest.partition("/")
        entries[head + sep] = None
    return sorted(entries) if entries else None


def answer_get(r: MetadataRecord, path: str) -> Answer:
    """A GET of `path` (no query) for this instance."""
    parts = path.split("/")
    if path in ("", "/"):
        return Answer(200, "\n".join(VERSIONS).encode())
    if len(parts) < 2 or parts[0] != "" or parts[1] not in _VERSIONS:
        return NOT_FOUND
    rest = "/".join(parts[2:])
    if rest == "":
        top = ["meta-data/"] + (["user-data"] if r.user_data is not None else [])
        return Answer(200, "\n".join(top).encode())
    if rest == "user-data":
        if r.user_data is None:
            return NOT_FOUND
        return Answer(200, r.user_data, "application/octet-stream")
    if rest != "meta-data" and not rest.startswith("meta-data/"):
        return NOT_FOUND
    key = rest[len("meta-data/") :] if rest.startswith("meta-data/") else ""
    tree = meta_data(r)
    if key == "public-keys" or key == "public-keys/":
        return Answer(200, f"0={r.key_name or 'key'}".encode()) if r.public_key else NOT_FOUND
    if key in tree:
        return Answer(200, tree[key].encode())
    if key == "" or key.endswith("/"):
        listing = _listing(tree, key)
        if listing is None:
            return NOT_FOUND
        return Answer(200, "\n".join(listing).encode())
    if _listing(tree, key + "/") is not None:  # a directory named without its slash
        return Answer(200, "\n".join(_listing(tree, key + "/") or []).encode())
    return NOT_FOUND


def _record_from_spec(base: MetadataRecord, spec: InstanceSpec) -> MetadataRecord:
    return dataclasses.replace(
        base,
        reservation_id=spec.reservation_id,
        image_id=spec.machine.image_id,
        instance_type=spec.vm_type.name,
        launch_index=spec.launch_index,
        kernel_id=spec.kernel.image_id if spec.kernel else None,
        ramdisk_id=spec.ramdisk.image_id if spec.ramdisk else None,
        key_name=spec.key_name,
        public_key=spec.public_key,
        user_data=spec.user_data or None,
    )


def _record_from_metadata(base: MetadataRecord, m: InstanceMetadata) -> MetadataRecord:
    return dataclasses.replace(
        base,
        reservation_id=m.reservation_id,
        image_id=m.image_id,
        instance_type=m.instance_type,
        launch_index=m.launch_index,
        kernel_id=m.kernel_id,
        ramdisk_id=m.ramdisk_id,
        key_name=m.key_name,
        public_key=m.public_key,
        user_data=m.user_data or None,
        security_groups=tuple(m.security_groups),
        manifest_path=m.manifest_path,
        block_devices=tuple((d.name, d.device) for d in m.block_devices) or DEFAULT_BLOCK_DEVICES,
        iam=m.iam,
    )


class Catalog:
    """What the metadata service knows of each instance beyond its lease: the CLC's InstanceMetadata (sent
    when this CC asked for it: after a restart, after a launch, after a change) and, until that arrives,
    the launch spec this CC placed. In memory only: a restarted CC asks again at its first poll."""

    def __init__(self) -> None:
        self._specs: dict[str, InstanceSpec] = {}
        self._metadata: dict[str, InstanceMetadata] = {}

    def note_launch(self, spec: InstanceSpec) -> None:
        self._specs[spec.instance_id] = spec

    def spec(self, instance_id: str) -> InstanceSpec | None:
        return self._specs.get(instance_id)

    def put(self, entries: Iterable[InstanceMetadata]) -> None:
        for m in entries:
            self._metadata[m.instance_id] = m

    def forget(self, instance_id: str) -> None:
        self._specs.pop(instance_id, None)
        self._metadata.pop(instance_id, None)

    def wanted(self, view: NetworkView) -> list[str]:
        """The instances of `view` whose metadata of the version it names this CC lacks; what it holds of
        instances no longer in the view is dropped (they ended)."""
        live = {i.instance_id for i in view.instances}
        for gone in [i for i in self._metadata if i not in live]:
            del self._metadata[gone]
        wanted: list[str] = []
        for i in view.instances:
            held = self._metadata.get(i.instance_id)
            if i.metadata_version and (held is None or held.version != i.metadata_version):
                wanted.append(i.instance_id)
        return wanted

    def record(self, base: MetadataRecord) -> MetadataRecord:
        """`base` (what the lease and the view say) with what this catalog knows of its instance."""
        held = self._metadata.get(base.instance_id)
        if held is not None:
            return _record_from_metadata(base, held)
        spec = self._specs.get(base.instance_id)
        return base if spec is None else _record_from_spec(base, spec)


class Tokens:
    """IMDSv2 session tokens: an HMAC over (instance, expiry), so they need no table and die with the key
    (a restarted CC issues new ones; guests ask again on 401, as they do on EC2 after expiry)."""

    def __init__(self, key: bytes):
        self._key = key

    def issue(self, instance_id: str, now: float, ttl: int) -> str:
        expiry = int(now) + ttl
        mac = hmac.new(self._key, f"{instance_id}|{expiry}".encode(), hashlib.sha256).digest()[:20]
        return base64.urlsafe_b64encode(struct.pack(">Q", expiry) + mac).decode().rstrip("=")

    def valid(self, token: str, instance_id: str, now: float) -> bool:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return False
        if len(raw) != 28:
            return False
        (expiry,) = struct.unpack(">Q", raw[:8])
        mac = hmac.new(self._key, f"{instance_id}|{expiry}".encode(), hashlib.sha256).digest()[:20]
        return hmac.compare_digest(mac, raw[8:]) and now < expiry


def answer(
    r: MetadataRecord | None, method: str, path: str, headers: dict[str, str], tokens: Tokens, now: float
) -> Answer:
    """The service's answer to one request from the instance `r` (None: the source is no instance)."""
    path = path.split("?", 1)[0]
    if method == "PUT" and path.rstrip("/") == "/latest/api/token":
        if "x-forwarded-for" in headers:
            return Answer(403, b"Forbidden\n")
        ttl_text = headers.get(TOKEN_TTL_HEADER, "")
        if not ttl_text.isdigit() or not 1 <= int(ttl_text) <= MAX_TOKEN_TTL:
            return Answer(400, b"Bad Request\n")
        if r is None:
            return Answer(403, b"Forbidden\n")
        ttl = int(ttl_text)
        token = tokens.issue(r.instance_id, now, ttl)
        return Answer(200, token.encode(), headers=((TOKEN_TTL_HEADER, str(ttl)),))
    if method not in ("GET", "HEAD"):
        return Answer(405, b"Method Not Allowed\n", headers=(("Allow", "GET, HEAD, PUT"),))
    if r is None:
        return NOT_FOUND
    session = headers.get(TOKEN_HEADER)
    if session is not None and not tokens.valid(session, r.instance_id, now):
        return Answer(401, b"Unauthorized\n")
    return answer_get(r, path)
