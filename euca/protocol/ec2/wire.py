"""The EC2 Query wire format, sans-I/O, driven by botocore's EC2 model.

Requests: `Action=...&Version=...&Name.1=...&Filter.1.Value.2=...` (form body or query string) are decoded
once, by walking the model's input shape, into a plain tree of typed values (str, int, bool, float, bytes,
datetime, lists, dicts keyed by the model's member names), then converted into the action's msgspec Struct.
Responses: a result Struct (or dict keyed by member names) is rendered by walking the output shape into the XML
botocore's EC2 parser reads (`<XxxResponse xmlns=..><requestId/>..`, lists as `<xSet><item>..</item></xSet>`).
Errors: `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`.

The model is botocore's `ec2/2016-11-15/service-2.json` with the documentation stripped, vendored beside this
file so the server needs no botocore and a botocore upgrade cannot change what the server accepts.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec

from euca.protocol.errors import CodedError

API_VERSION = "2016-11-15"
MODEL_FILE = "service-2016-11-15.json.gz"

T = TypeVar("T")

# Parameters that belong to the signature (SigV2 in the form, SigV4 presigned in the query), not to the action.
AUTH_PARAMS = frozenset(
    {
        "AWSAccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "Timestamp",
        "Expires",
        "SecurityToken",
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
    }
)

# HTTP status AWS uses for an error code; every other code is a client error (400).
_ERROR_STATUS = {
    "AuthFailure": 401,
    "UnauthorizedOperation": 403,
    "DryRunOperation": 412,
    "InternalError": 500,
    "Unavailable": 503,
    "RequestLimitExceeded": 503,
}


class Ec2Error(CodedError):
    """An error an EC2 client branches on: rendered as EC2's <Response><Errors> XML; the status follows
    the code unless given."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(code, message, status if status is not None else _ERROR_STATUS.get(code, 400))


# -- the model -------------------------------------------------------------------------------------------


class Model:
    def __init__(self, raw: dict[str, Any]):
        self.metadata: dict[str, Any] = raw["metadata"]
        self.operations: dict[str, dict[str, Any]] = raw["operations"]
        self.shapes: dict[str, dict[str, Any]] = raw["shapes"]
        self._wire_members: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}

    def input_wire_members(self, shape_name: str) -> dict[str, tuple[str, dict[str, Any]]]:
        """lower-cased wire name -> (member name, member reference), as EC2's query serialiser names them."""
        found = self._wire_members.get(shape_name)
        if found is None:
            found = {}
            for member, ref in self.shapes[shape_name].get("members", {}).items():
                found[_input_wire_name(member, ref).lower()] = (member, ref)
            self._wire_members[shape_name] = found
        return found


def _input_wire_name(member: str, ref: dict[str, Any]) -> str:
    # EC2's rule (botocore EC2Serializer): queryName, else locationName capitalised, else the member name.
    if "queryName" in ref:
        return str(ref["queryName"])
    if "locationName" in ref:
        name = str(ref["locationName"])
        return name[0].upper() + name[1:]
    return member


@cache
def model() -> Model:
    """The EC2 model, loaded on first use (about 20 ms) and kept."""
    data = resources.files(__package__).joinpath(MODEL_FILE).read_bytes()
    return Model(msgspec.json.decode(gzip.decompress(data)))


def is_known_action(action: str) -> bool:
    return action in model().operations


# -- requests --------------------------------------------------------------------------------------------


class QueryEnvelope(msgspec.Struct, frozen=True):
    """What every Query request carries: the action, the API version, and the action's own parameters."""

    action: str
    version: str
    params: dict[str, str]


def parse_form(query: str, body: bytes, content_type: str | None) -> dict[str, str]:
    """All request parameters: the query string, then a form-encoded body (the body wins on a repeated name)."""
    params: dict[str, str] = {}
    if query:
        params.update(_parse_qs(query))
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if body and ctype in ("application/x-www-form-urlencoded", ""):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Ec2Error("InvalidParameterValue", "The request body is not valid UTF-8.") from e
        params.update(_parse_qs(text))
    return params


def _parse_qs(text: str) -> dict[str, str]:
    try:
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Ec2Error("MalformedQueryString", "The query string is malformed.") from e


def envelope(params: dict[str, str]) -> QueryEnvelope:
    """Split Action and Version (and signature parameters) from the action's parameters."""
    action = params.get("Action", "")
    if not action:
        raise Ec2Error("MissingAction", "The request must contain the parameter Action.")
    version = params.get("Version", "") or API_VERSION
    if not is_known_version(version):
        raise Ec2Error(
            "NoSuchVersion", f"The requested version ({version[:64]}) of service AmazonEC2 does not exist"
        )
    own = {k: v for k, v in params.items() if k not in ("Action", "Version") and k not in AUTH_PARAMS}
    return QueryEnvelope(action=action, version=version, params=own)


# The first EC2 API version; every version up to the model's is a date of the form 2016-11-15.
FIRST_API_VERSION = "2006-06-26"


def is_known_version(version: str) -> bool:
    """Whether `version` can be an EC2 API version: a real date from the first API version to the model's (EC2
    keeps answering old versions; euca2ools sends them). Anything else AWS answers NoSuchVersion."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", version) is None:
        return False
    try:
        datetime.strptime(version, "%Y-%m-%d")
    except ValueError:
        return False
    return FIRST_API_VERSION <= version <= API_VERSION


def decode_input(action: str, params: dict[str, str]) -> dict[str, Any]:
    """The action's parameters as a tree keyed by the model's member names, values typed by the model."""
    m = model()
    op = m.operations.get(action)
    if op is None:
        raise Ec2Error("InvalidAction", f"The action {action} is not valid for this web service.")
    tree = form_tree(params)
    input_ref = op.get("input")
    if input_ref is None:
        if tree:
            name = next(iter(params))
            raise Ec2Error("UnknownParameter", f"The parameter {name} is not recognized")
        return {}
    result = _decode(m, input_ref["shape"], tree, "")
    assert isinstance(result, dict)
    return result


def parse_request(action: str, params: dict[str, str], request_type: type[T]) -> T:
    """Decode the parameters once and convert them into the action's request Struct."""
    tree = decode_input(action, params)
    try:
        return msgspec.convert(tree, request_type)
    except msgspec.ValidationError as e:
        text = str(e)
        missing = re.match(r"Object missing required field `(\w+)`", text)
        if missing:
            raise Ec2Error(
                "MissingParameter", f"The request must contain the parameter {missing.group(1)}"
            ) from e
        raise Ec2Error("InvalidParameterValue", f"Invalid parameter: {text}") from e


_Tree = dict[str, Any]


def form_tree(params: dict[str, str]) -> _Tree:
    """`Filter.1.Value.2=x` -> {"Filter": {"1": {"Value": {"2": "x"}}}}."""
    root: _Tree = {}
    for key, value in params.items():
        parts = key.split(".")
        node = root
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                # `Name=` (an empty list, as botocore's query serialiser sends one) then `Name.1=`
                if child == "":
                    child = node[part] = {}
                else:
                    raise Ec2Error(
                        "InvalidParameterValue", f"The parameter {'.'.join(parts[: i + 1])} is repeated"
                    )
            node = child
        last = parts[-1]
        if isinstance(node.get(last), dict):
            if value == "":
                continue
            raise Ec2Error("InvalidParameterValue", f"The parameter {key} is repeated")
        node[last] = value
    return root


def _decode(m: Model, shape_name: str, node: Any, path: str) -> Any:
    shape = m.shapes[shape_name]
    kind = shape["type"]
    if kind == "structure":
        if not isinstance(node, dict):
            raise Ec2Error("InvalidParameterValue", f"The parameter {path} needs members, not a value")
        wire = m.input_wire_members(shape_name)
        out: dict[str, Any] = {}
        for key, child in node.items():
            found = wire.get(key.lower())
            child_path = f"{path}.{key}" if path else key
            if found is None:
                raise Ec2Error("UnknownParameter", f"The parameter {child_path} is not recognized")
            member, ref = found
            out[member] = _decode(m, ref["shape"], child, child_path)
        for member in shape.get("required", ()):
            if member not in out:
                ref = shape["members"][member]
                name = _input_wire_name(member, ref)
                raise Ec2Error(
                    "MissingParameter",
                    f"The request must contain the parameter {path + '.' if path else ''}{name}",
                )
        return out
    if kind == "list":
        member_shape = shape["member"]["shape"]
        if isinstance(node, str):
            if node == "":
                return []
            # `ImageId=emi-..` without an index: older clients send single-element lists this way.
            return [_decode(m, member_shape, node, path)]
        items: list[tuple[int, Any]] = []
        for key, child in node.items():
            if not key.isdigit() or int(key) < 1:
                raise Ec2Error("UnknownParameter", f"The parameter {path}.{key} is not recognized")
            items.append((int(key), child))
        items.sort(key=lambda kv: kv[0])
        return [_decode(m, member_shape, child, f"{path}.{i}") for i, child in items]
    if isinstance(node, dict):
        raise Ec2Error("InvalidParameterValue", f"The parameter {path} takes a value, not members")
    if kind in ("integer", "long"):
        return decode_integer(shape, node, path)
    return decode_scalar(kind, node, path)


# What an integer of the model may hold when its shape gives no range: EC2's integers are Java's int and long.
_INTEGER_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def decode_integer(shape: dict[str, Any], text: str, path: str) -> int:
    """An integer within its shape's min/max (else the 32- or 64-bit range), checked before any handler or
    query sees it: a number SQLite or a range check downstream cannot take is the client's error."""
    stripped = text.strip()
    if len(stripped) > 24 or re.fullmatch(r"[+-]?\d+", stripped) is None:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ({text[:64]}) for parameter {path} is invalid. Expected an integer.",
        )
    value = int(stripped)
    lo, hi = _INTEGER_RANGE[shape["type"]]
    lo = int(shape.get("min", lo))
    hi = int(shape.get("max", hi))
    if not lo <= value <= hi:
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ( {text[:64]} ) for parameter {path} is invalid. Expecting a value between {lo} and {hi}.",
        )
    return value


def decode_scalar(kind: str, text: str, path: str) -> Any:
    if kind == "string":
        return text
    if kind == "boolean":
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ({text}) for parameter {path} is invalid. Expected: 'true' or 'false'.",
        )
    if kind in ("float", "double"):
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):  # "nan", "inf" and 1e999 are no number a client means
            raise Ec2Error(
                "InvalidParameterValue",
                f"Value ({text[:64]}) for parameter {path} is invalid. Expected a number.",
            )
        return number
    if kind == "timestamp":
        return _parse_timestamp(text, path)
    if kind == "blob":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise Ec2Error(
                "InvalidParameterValue", f"Value for parameter {path} is not valid base64."
            ) from None
    raise Ec2Error("InvalidParameterValue", f"The parameter {path} has an unsupported type")


def _parse_timestamp(text: str, path: str) -> datetime:
    value = text.strip()
    try:
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise Ec2Error(
            "InvalidParameterValue", f"Value ({text}) for parameter {path} is not a valid timestamp."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- responses -------------------------------------------------------------------------------------------


def new_request_id() -> str:
    return str(uuid.uuid4())


def namespace(version: str) -> str:
    # Eucalyptus answered in the namespace of the version asked for; botocore does not check it.
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", version):
        version = API_VERSION
    return f"http://ec2.amazonaws.com/doc/{version}/"


def render_response(action: str, result: Any, request_id: str, version: str = API_VERSION) -> bytes:
    """`<{action}Response>` with the result rendered by the operation's output shape."""
    m = model()
    op = m.operations[action]
    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<{action}Response xmlns="{namespace(version)}"><requestId>{xml_escape(request_id)}</requestId>',
    ]
    output_ref = op.get("output")
    if output_ref is None:
        out.append("<return>true</return>")
    elif result is not None:
        data = (
            result
            if isinstance(result, dict)
            else msgspec.to_builtins(result, builtin_types=(datetime, bytes))
        )
        _render_members(m, output_ref["shape"], data, out)
    out.append(f"</{action}Response>")
    return "".join(out).encode("utf-8")


# How an output shape renders, worked out once per shape from the model (a DescribeInstances of 10,000
# renders 1.5 million elements: per element, only the value's own work is left).
_SCALAR, _STRUCTURE, _LIST = 0, 1, 2


@dataclass(frozen=True)
class _Field:
    member: str
    kind: int
    scalar_type: str  # the model's type name, for scalars
    shape: str  # structure: its shape; list: the items' shape
    open: str
    close: str
    item: _Field | None = None  # a list's items


@dataclass(frozen=True)
class _Plan:
    members: frozenset[str]
    fields: tuple[_Field, ...]


_PLANS: dict[tuple[int, str], _Plan] = {}


def _field(m: Model, member: str, shape_name: str, tag: str) -> _Field:
    shape = m.shapes[shape_name]
    kind = shape["type"]
    if kind == "structure":
        return _Field(member, _STRUCTURE, kind, shape_name, f"<{tag}>", f"</{tag}>")
    if kind == "list":
        item_ref = shape["member"]
        item = _field(m, "", item_ref["shape"], item_ref.get("locationName", "item"))
        return _Field(member, _LIST, kind, item_ref["shape"], f"<{tag}>", f"</{tag}>", item)
    return _Field(member, _SCALAR, kind, shape_name, f"<{tag}>", f"</{tag}>")


def _plan(m: Model, shape_name: str) -> _Plan:
    key = (id(m), shape_name)
    plan = _PLANS.get(key)
    if plan is None:
        members = m.shapes[shape_name]["members"]
        plan = _Plan(
            frozenset(members),
            tuple(
                _field(m, member, ref["shape"], ref.get("locationName", member))
                for member, ref in members.items()
            ),
        )
        _PLANS[key] = plan
    return plan


def _render_members(m: Model, shape_name: str, data: dict[str, Any], out: list[str]) -> None:
    plan = _plan(m, shape_name)
    if not plan.members.issuperset(data):
        raise ValueError(f"{shape_name} has no member(s) {sorted(set(data) - plan.members)}")
    get, append, special = data.get, out.append, _XML_SPECIAL.search
    for f in plan.fields:
        value = get(f.member)
        if value is None:
            continue
        if f.kind == _SCALAR:  # inline: most of a big answer's elements are scalars of a structure
            text = value if type(value) is str else _scalar_text(f.scalar_type, value)
            append(f.open + (text if special(text) is None else xml_escape(text)) + f.close)
        else:
            _render_field(m, f, value, out)


def _render_field(m: Model, f: _Field, value: Any, out: list[str]) -> None:
    if f.kind == _SCALAR:
        text = value if type(value) is str else _scalar_text(f.scalar_type, value)
        out.append(f.open + xml_escape(text) + f.close)
    elif f.kind == _STRUCTURE:
        out.append(f.open)
        _render_members(m, f.shape, value, out)
        out.append(f.close)
    else:
        item = f.item
        assert item is not None
        out.append(f.open)
        for v in value:
            if v is not None:
                _render_field(m, item, v, out)
        out.append(f.close)


def _scalar_text(kind: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as EC2 writes them: 2024-05-01T12:00:00.000Z."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def render_error(error: Ec2Error, request_id: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{xml_escape(error.code)}</Code><Message>{xml_escape(error.message)}</Message>"
        f"</Error></Errors><RequestID>{xml_escape(request_id)}</RequestID></Response>"
    ).encode()


_XML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})
# XML 1.0 cannot carry most control characters at all; they are dropped rather than making the document invalid.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


_XML_SPECIAL = re.compile('[&<>"\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')


def xml_escape(text: str) -> str:
    if _XML_SPECIAL.search(text) is None:  # most values (ids, names, addresses): nothing to do
        return text
    return _XML_INVALID.sub("", text.translate(_XML_ESCAPES))
