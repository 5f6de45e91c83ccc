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
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

TOKEN_TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
_VERSION = re.compile(r"^(latest|1\.0|\d{4}-\d{2}-\d{2})$")


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
        "ami-manifest-path": "(unknown)",
        "block-device-mapping/ami": "/dev/sda1",
        "block-device-mapping/root": "/dev/sda1",
    }
    optional = {
        "public-ipv4": r.public_ipv4,
        "public-hostname": public_dns_name(r.public_ipv4) if r.public_ipv4 else None,
        "reservation-id": r.reservation_id,
        "ami-id": r.image_id,
        "instance-type": r.instance_type,
        "ami-launch-index": None if r.launch_index is None else str(r.launch_index),
        "kernel-id": r.kernel_id,
        "ramdisk-id": r.ramdisk_id,
    }
    tree.update({k: v for k, v in optional.items() if v is not None})
    if r.public_key:
        tree["public-keys/0/openssh-key"] = r.public_key.strip() + "\n"
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
        return Answer(200, b"latest\n")
    if len(parts) < 2 or parts[0] != "" or not _VERSION.match(parts[1]):
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
