"""S3 browser-based uploads (POST Object with an HTML form), sans-I/O.

- MultipartParser: a streaming multipart/form-data parser. Fields before the `file` field are small and
  buffered (with a limit); the file part is handed out in pieces as it arrives, never whole.
- Policy: the base64 JSON policy document ("expiration", "conditions") and its validation against the form.
- Signature checks for SigV2 (base64 HMAC-SHA1 of the policy) and SigV4 (hex HMAC-SHA256 with the SigV4 key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

from euca.protocol import sigv4
from euca.protocol.bounded import loads_json
from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.wire import CHECKSUM_ALGORITHMS, document, escape, quote_etag

MAX_FIELD_BYTES = 64 * 1024  # one form field (policy documents and tag sets are well under this)
MAX_FIELDS_BYTES = 1024 * 1024  # all fields before the file
MAX_HEADER_BYTES = 8 * 1024  # the headers of one part
MAX_POLICY_DEPTH = 8  # {"conditions": [["starts-with", ...]]} is 3 deep

# Fields that never need a policy condition (AWS: AWSAccessKeyId, signature, file, policy, x-ignore-*).
_EXEMPT_FIELDS = frozenset({"awsaccesskeyid", "signature", "file", "policy", "x-amz-signature"})


def _malformed(
    message: str = "The body of your POST request is not well-formed multipart/form-data.",
) -> S3Error:
    return S3Error("MalformedPOSTRequest", message, 400)


def boundary_of(content_type: str) -> bytes:
    """The boundary of a `multipart/form-data; boundary=...` content type; MalformedPOSTRequest if none."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise _malformed()
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip().strip('"')
            if 0 < len(value) <= 200:
                return value.encode("latin-1")
    raise _malformed()


# -- multipart/form-data -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Field:
    name: str  # as sent (compare lower-cased)
    value: str


@dataclass(slots=True)
class FileStart:
    filename: str
    content_type: str | None


@dataclass(slots=True)
class FileData:
    data: bytes


@dataclass(slots=True)
class FileEnd:
    pass


Event = Field | FileStart | FileData | FileEnd


def _disposition(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for m in re.finditer(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', value):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3).strip()
    return params


class MultipartParser:
    """Feed body bytes, get events. Ends at the end of the `file` part: AWS ignores what follows it."""

    def __init__(self, boundary: bytes):
        self.delimiter = b"\r\n--" + boundary
        self.buf = bytearray(b"\r\n")  # lets the first boundary match the same delimiter as the others
        self.state = "preamble"
        self.part_name = ""
        self.in_file = False
        self.fields_size = 0
        self.done = False

    def feed(self, data: bytes) -> list[Event]:
        if self.done:
            return []
        self.buf += data
        events: list[Event] = []
        while not self.done:
            if not self._step(events):
                break
        return events

    def finish(self) -> None:
        """The body ended: MalformedPOSTRequest unless the file part was complete."""
        if not self.done:
            raise _malformed()

    def _step(self, events: list[Event]) -> bool:
        if self.state == "preamble":
            i = self.buf.find(self.delimiter)
            if i < 0:
                if len(self.buf) > MAX_HEADER_BYTES:
                    raise _malformed()
                return False
            del self.buf[: i + len(self.delimiter)]
            self.state = "after-boundary"
            return True
        if self.state == "after-boundary":
            if len(self.buf) < 2:
                return False
            if self.buf[:2] == b"--":
                # The closing boundary before any file part.
                raise S3Error(
                    "InvalidArgument",
                    "POST requires exactly one file upload per request.",
                    400,
                    ArgumentName="file",
                    ArgumentValue="0",
                )
            i = self.buf.find(b"\r\n")
            if i < 0:
                if len(self.buf) > MAX_HEADER_BYTES:
                    raise _malformed()
                return False
            del self.buf[: i + 2]  # CRLF (after optional transport padding)
            self.state = "headers"
            return True
        if self.state == "headers":
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                if len(self.buf) > MAX_HEADER_BYTES:
                    raise _malformed()
                return False
            raw = bytes(self.buf[:i]).decode("utf-8", "replace")
            del self.buf[: i + 4]
            headers: dict[str, str] = {}
            for line in raw.split("\r\n"):
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            disp = headers.get("content-disposition", "")
            if not disp.lower().startswith("form-data"):
                raise _malformed()
            params = _disposition(disp)
            part_name = params.get("name")
            if part_name is None:
                raise _malformed()
            self.part_name = part_name
            self.in_file = part_name.lower() == "file"
            if self.in_file:
                events.append(FileStart(params.get("filename", ""), headers.get("content-type")))
            self.state = "body"
            return True
        # body
        i = self.buf.find(self.delimiter)
        if i >= 0:
            content = bytes(self.buf[:i])
            del self.buf[: i + len(self.delimiter)]
            if self.in_file:
                if content:
                    events.append(FileData(content))
                events.append(FileEnd())
                self.done = True
                self.buf = bytearray()
                return False
            self._field(events, content)
            self.state = "after-boundary"
            return True
        keep = len(self.delimiter) - 1  # a delimiter may be split across reads
        if self.in_file:
            if len(self.buf) > keep:
                events.append(FileData(bytes(self.buf[:-keep])))
                del self.buf[:-keep]
        elif len(self.buf) > MAX_FIELD_BYTES + keep:
            raise S3Error(
                "MaxPostPreDataLengthExceeded",
                "Your POST request fields preceding the upload file were too large.",
                400,
            )
        return False

    def _field(self, events: list[Event], content: bytes) -> None:
        if len(content) > MAX_FIELD_BYTES:
            raise S3Error(
                "MaxPostPreDataLengthExceeded",
                "Your POST request fields preceding the upload file were too large.",
                400,
            )
        self.fields_size += len(content)
        if self.fields_size > MAX_FIELDS_BYTES:
            raise S3Error(
                "MaxPostPreDataLengthExceeded",
                "Your POST request fields preceding the upload file were too large.",
                400,
            )
        events.append(Field(self.part_name, content.decode("utf-8", "replace")))


# -- the form -------------------------------------------------------------------------------------------------


class Form:
    """The fields before the file, by lower-cased name (the first of a repeated name wins)."""

    def __init__(self, fields: list[Field]):
        self.names: list[str] = []
        self.values: dict[str, str] = {}
        for f in fields:
            name = f.name.lower()
            if name not in self.values:
                self.names.append(name)
                self.values[name] = f.value

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.values.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.values

    def items(self) -> list[tuple[str, str]]:
        return list(self.values.items())


def _argument_missing(name: str) -> S3Error:
    return S3Error(
        "InvalidArgument",
        f"Bucket POST must contain a field named '{name}'.  If it is specified, "
        "please check the order of the fields.",
        400,
        ArgumentName=name,
        ArgumentValue="",
    )


def object_key(form: Form, filename: str) -> str:
    key = form.get("key")
    if key is None:
        raise _argument_missing("key")
    key = key.replace("${filename}", filename.replace("\\", "/").rsplit("/", 1)[-1])
    if not key:
        raise S3Error(
            "InvalidArgument", "User key must have a length greater than 0.", 400, ArgumentName="key"
        )
    return key


# -- credentials -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PostCredentials:
    """How the form is signed: 'anonymous' (no policy), 'sigv2' or 'sigv4'."""

    method: str
    access_key_id: str = ""
    signature: str = ""
    policy: str = ""  # the base64 policy as sent
    date: str = ""  # sigv4 credential scope
    region: str = ""
    service: str = ""


def credentials(form: Form) -> PostCredentials:
    policy = form.get("policy")
    algorithm = form.get("x-amz-algorithm")
    if algorithm is not None or "x-amz-credential" in form or "x-amz-signature" in form:
        if algorithm != sigv4.ALGORITHM:
            raise S3Error(
                "InvalidArgument",
                "Only AWS4-HMAC-SHA256 is supported for SigV4 POST.",
                400,
                ArgumentName="x-amz-algorithm",
                ArgumentValue=algorithm or "",
            )
        credential = form.get("x-amz-credential")
        signature = form.get("x-amz-signature")
        if credential is None:
            raise _argument_missing("x-amz-credential")
        if signature is None:
            raise _argument_missing("x-amz-signature")
        if policy is None:
            raise _argument_missing("policy")
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise S3Error(
                "InvalidArgument",
                f"Invalid credential: {credential}",
                400,
                ArgumentName="x-amz-credential",
                ArgumentValue=credential,
            )
        return PostCredentials("sigv4", parts[0], signature, policy, parts[1], parts[2], parts[3])
    key_id = form.get("awsaccesskeyid")
    if policy is None and key_id is None:
        return PostCredentials("anonymous")
    if key_id is None:
        raise _argument_missing("AWSAccessKeyId")
    if policy is None:
        raise _argument_missing("policy")
    signature = form.get("signature")
    if signature is None:
        raise _argument_missing("Signature")
    return PostCredentials("sigv2", key_id, signature, policy)


def check_signature(cred: PostCredentials, secret: str) -> None:
    """SignatureDoesNotMatch (403) unless the form's signature is the policy signed with `secret`."""
    if cred.method == "sigv2":
        expected = base64.b64encode(
            hmac.new(secret.encode(), cred.policy.encode(), hashlib.sha1).digest()
        ).decode()
        ok = hmac.compare_digest(expected.encode(), cred.signature.strip().encode("latin-1", "replace"))
    else:
        key = sigv4.signing_key(secret, cred.date, cred.region, cred.service)
        ok = sigv4.signatures_equal(sigv4.sign(key, cred.policy), cred.signature.strip().lower())
    if not ok:
        raise S3Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature "
            "you provided. Check your key and signing method.",
            403,
        )


# -- the policy document ---------------------------------------------------------------------------------------


def _invalid_policy(message: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {message}", 400)


def _denied(message: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {message}", 403)


_EXPIRATION_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$")


@dataclass(slots=True)
class Condition:
    op: str  # "eq", "starts-with", "content-length-range"
    name: str = ""  # field name, lower-case, no "$"
    value: str = ""
    low: int = 0
    high: int = 0
    text: str = ""  # as written, for error messages


@dataclass(slots=True)
class Policy:
    expiration: float
    conditions: list[Condition] = field(default_factory=list)

    @property
    def length_range(self) -> tuple[int, int] | None:
        for c in self.conditions:
            if c.op == "content-length-range":
                return c.low, c.high
        return None


def _field_name(raw: object, text: str) -> str:
    if not isinstance(raw, str) or not raw.startswith("$") or len(raw) < 2:
        raise _invalid_policy(f"Invalid Condition: {text}")
    return raw[1:].lower()


def _int_arg(raw: object, text: str) -> int:
    if isinstance(raw, bool):
        raise _invalid_policy(f"Invalid content-length-range: {text}")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
        return int(raw)
    raise _invalid_policy(f"Invalid content-length-range: {text}")


def _condition(raw: object) -> Condition:
    text = json.dumps(raw)
    if isinstance(raw, dict):
        if len(raw) != 1:
            raise _invalid_policy(
                f"Invalid Simple-Condition: Simple-Conditions must have exactly one property "
                f"specified. {text}"
            )
        ((name, value),) = raw.items()
        if not isinstance(value, str):
            raise _invalid_policy(f"Invalid Simple-Condition: {text}")
        name = name[1:] if name.startswith("$") else name
        return Condition("eq", name.lower(), value, text=text)
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        op = raw[0].lower()
        if op == "content-length-range":
            if len(raw) != 3:
                raise _invalid_policy(f"Invalid content-length-range: {text}")
            low, high = _int_arg(raw[1], text), _int_arg(raw[2], text)
            if low < 0 or high < 0 or low > high:
                raise _invalid_policy(f"Invalid content-length-range: {text}")
            return Condition(op, low=low, high=high, text=text)
        if op in ("eq", "starts-with"):
            if len(raw) != 3 or not isinstance(raw[2], str):
                raise _invalid_policy(f"Invalid Condition: {text}")
            return Condition(op, _field_name(raw[1], text), raw[2], text=text)
        raise _invalid_policy(f"Invalid Condition: unknown operation {raw[0]!r}")
    raise _invalid_policy(f"Invalid Condition: {text}")


def parse_policy(policy_b64: str) -> Policy:
    try:
        raw = base64.b64decode(policy_b64.strip(), validate=False)
        doc = loads_json(raw, max_bytes=MAX_FIELD_BYTES, max_depth=MAX_POLICY_DEPTH)
    except (binascii.Error, ValueError):  # BoundsError is a ValueError: too deep is no valid policy either
        raise _invalid_policy("Invalid JSON.") from None
    if not isinstance(doc, dict):
        raise _invalid_policy("Invalid JSON.")
    expiration = doc.get("expiration")
    if expiration is None:
        raise _invalid_policy("Policy missing expiration.")
    m = _EXPIRATION_RE.match(expiration) if isinstance(expiration, str) else None
    if m is None:
        raise _invalid_policy(f"Invalid 'expiration' value: '{expiration}'")
    try:
        y, mo, d, h, mi, sec = (int(g) for g in m.groups()[:6])
        when = datetime(y, mo, d, h, mi, sec, tzinfo=UTC).timestamp()
    except ValueError:
        raise _invalid_policy(f"Invalid 'expiration' value: '{expiration}'") from None
    conditions = doc.get("conditions")
    if conditions is None:
        raise _invalid_policy("Policy missing conditions.")
    if not isinstance(conditions, list):
        raise _invalid_policy("Invalid 'conditions' value: must be a list.")
    return Policy(when, [_condition(c) for c in conditions])


def check_policy(policy: Policy, values: Mapping[str, str], now: float) -> None:
    """AccessDenied unless the form (lower-case names -> values, including `bucket` and the final `key`)
    satisfies every condition and every field is named by a condition. Size is checked later (streamed)."""
    if now > policy.expiration:
        raise _denied("Policy expired.")
    named: set[str] = set()
    for c in policy.conditions:
        if c.op == "content-length-range":
            continue
        named.add(c.name)
        value = values.get(c.name, "")
        if c.op == "eq":
            ok = value == c.value
        elif c.name == "content-type":
            # Content-Type may be a comma-separated list; each must start with the prefix.
            ok = all(v.strip().startswith(c.value) for v in value.split(",")) if value else c.value == ""
        else:
            ok = value.startswith(c.value)
        if not ok:
            raise _denied(f"Policy Condition failed: {c.text}")
    extra = [
        n
        for n in values
        if n not in named
        and n not in _EXEMPT_FIELDS
        and not n.startswith("x-ignore-")
        # A checksum of the file grants nothing: the upload is refused if the file does not match it.
        and not n.startswith("x-amz-checksum-")
        and n not in ("x-amz-credential", "x-amz-algorithm", "x-amz-date", "x-amz-security-token")
    ]
    if extra:
        raise _denied(f"Extra input fields: {', '.join(extra)}")


def check_length(policy: Policy | None, size: int) -> None:
    rng = policy.length_range if policy is not None else None
    if rng is None:
        return
    if size < rng[0]:
        raise S3Error("EntityTooSmall", ProposedSize=str(size), MinSizeAllowed=str(rng[0]))
    if size > rng[1]:
        raise S3Error("EntityTooLarge", ProposedSize=str(size), MaxSizeAllowed=str(rng[1]))


# -- the answer ---------------------------------------------------------------------------------------------------


def success_status(value: str | None) -> int:
    return int(value) if value in ("200", "201", "204") else 204


def redirect_location(url: str, bucket: str, key: str, etag: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}bucket={quote(bucket, safe='')}&key={quote(key, safe='')}&etag={quote(quote_etag(etag), safe='')}"


def render_post_response(location: str, bucket: str, key: str, etag: str) -> bytes:
    inner = (
        f"<Location>{escape(location)}</Location><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
        f"<ETag>{escape(quote_etag(etag))}</ETag>"
    )
    return document("PostResponse", inner, ns=False)


def form_checksum(form: Form) -> tuple[str, str] | None:
    """(algorithm, base64 value) of an x-amz-checksum-<algorithm> field, None without one; InvalidRequest for
    an unknown algorithm or more than one."""
    found = [
        (n[len("x-amz-checksum-") :].upper(), v) for n, v in form.items() if n.startswith("x-amz-checksum-")
    ]
    found = [(a, v) for a, v in found if a != "ALGORITHM"]
    if not found:
        return None
    if len(found) > 1 or found[0][0] not in CHECKSUM_ALGORITHMS:
        raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- field with a known algorithm")
    return found[0]
