"""The AWS `query` protocol (IAM, STS), sans-I/O, driven by botocore's models.

Requests are the same form as EC2's (`Action=...&Version=...` in a form body or the query string), but the
query protocol names lists `Name.member.N` and maps `Name.entry.N.key` / `.value`, and takes member names
as they are (EC2 capitalises locationNames). The form parsing, the dotted-name tree and the scalar decoding
are EC2's (`euca.protocol.ec2.wire`), reused here; only the walk of the model differs.
Responses: `<{Action}Response xmlns=..><{Action}Result>..</{Action}Result><ResponseMetadata><RequestId>..`
with lists as `<Name><member>..</member></Name>`. Errors: `<ErrorResponse><Error><Type>Sender</Type>
<Code/><Message/></Error><RequestId/></ErrorResponse>`.

The models are botocore's `iam/2010-05-08` and `sts/2011-06-15` service-2.json with the documentation
stripped, vendored beside this file (as EC2's is).
"""

from __future__ import annotations

import gzip
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import msgspec

from euca.protocol.ec2 import wire as ec2_wire
from euca.protocol.errors import CodedError
from euca.protocol.query import euare

MODEL_FILES = {"iam": "iam-2010-05-08.json.gz", "sts": "sts-2011-06-15.json.gz"}

# What each service answers for an error code the model does not tie to a status (AWS's documented ones).
_ERROR_STATUS = {
    "NoSuchEntity": 404,
    "EntityAlreadyExists": 409,
    "LimitExceeded": 409,
    "DeleteConflict": 409,
    "AccessDenied": 403,
    "InvalidClientTokenId": 403,
    "SignatureDoesNotMatch": 403,
    "ExpiredToken": 400,
    "ServiceFailure": 500,
    "InternalFailure": 500,
    "MissingAuthenticationToken": 403,
    "IncompleteSignature": 400,
    "RequestExpired": 400,
}


class QueryError(CodedError):
    """An error of a query-protocol service: code, message, HTTP status and AWS's fault type."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(code, message, status if status is not None else _ERROR_STATUS.get(code, 400))

    @property
    def fault(self) -> str:
        return "Receiver" if self.status >= 500 else "Sender"


class Model:
    def __init__(self, raw: dict[str, Any]):
        self.metadata: dict[str, Any] = raw["metadata"]
        self.operations: dict[str, dict[str, Any]] = raw["operations"]
        self.shapes: dict[str, dict[str, Any]] = raw["shapes"]

    @property
    def version(self) -> str:
        return str(self.metadata["apiVersion"])

    @property
    def xmlns(self) -> str:
        return str(self.metadata["xmlNamespace"])


@cache
def model(service: str) -> Model:
    data = resources.files(__package__).joinpath(MODEL_FILES[service]).read_bytes()
    raw = msgspec.json.decode(gzip.decompress(data))
    return Model(euare.extend(raw) if service == "iam" else raw)


# -- requests --------------------------------------------------------------------------------------------


def parse_form(query: str, body: bytes, content_type: str | None) -> dict[str, str]:
    try:
        return ec2_wire.parse_form(query, body, content_type)
    except CodedError as e:
        raise QueryError(e.code, e.message) from None


class Envelope(msgspec.Struct, frozen=True):
    action: str
    params: dict[str, str]
    # Euare's DelegateAccount: the account (name or id) the cloud administrator acts in; "" for its own.
    delegate: str = ""


def envelope(service: str, params: dict[str, str]) -> Envelope:
    action = params.get("Action", "")
    if not action:
        raise QueryError("MissingAction", "Missing Action")
    m = model(service)
    if action not in m.operations:
        raise QueryError("InvalidAction", f"Could not find operation {action[:64]} for version {m.version}")
    version = params.get("Version", "") or m.version
    if version != m.version:
        raise QueryError(
            "InvalidAction", f"Could not find operation {action[:64]} for version {version[:32]}"
        )
    skip = ("Action", "Version", euare.DELEGATE_PARAM)
    own = {k: v for k, v in params.items() if k not in skip and k not in ec2_wire.AUTH_PARAMS}
    delegate = params.get(euare.DELEGATE_PARAM, "") if service == "iam" else ""
    return Envelope(action, own, delegate)


def decode_input(service: str, action: str, params: dict[str, str]) -> dict[str, Any]:
    """The action's parameters as a tree keyed by the model's member names, typed and checked by the model
    (required members, string lengths and patterns' simplest part: min/max length, integer ranges)."""
    m = model(service)
    try:
        tree = ec2_wire.form_tree(params)
    except CodedError as e:
        raise QueryError("ValidationError", e.message) from None
    input_ref = m.operations[action].get("input")
    if input_ref is None:
        return {}
    result = _decode(m, input_ref["shape"], tree, "")
    assert isinstance(result, dict)
    return result


def _member_name(member: str, ref: dict[str, Any]) -> str:
    return str(ref.get("locationName", member))


def _decode(m: Model, shape_name: str, node: Any, path: str) -> Any:
    shape = m.shapes[shape_name]
    kind = shape["type"]
    if kind == "structure":
        if not isinstance(node, dict):
            raise QueryError("ValidationError", f"The parameter {path} needs members, not a value")
        names = {_member_name(k, r): (k, r) for k, r in shape.get("members", {}).items()}
        out: dict[str, Any] = {}
        for key, child in node.items():
            child_path = f"{path}.{key}" if path else key
            found = names.get(key)
            if found is None:
                # AWS's query services ignore parameters they do not know (boto2 and euca2ools send extras).
                continue
            member, ref = found
            out[member] = _decode(m, ref["shape"], child, child_path)
        for member in shape.get("required", ()):
            if member not in out:
                where = f"{path}.{member}" if path else member
                raise QueryError(
                    "ValidationError",
                    f"1 validation error detected: Value null at '{_lower_first(where)}' failed to satisfy "
                    "constraint: Member must not be null",
                )
        return out
    if kind == "list":
        member_ref = shape["member"]
        if isinstance(node, str):
            if node == "":
                return []
            raise QueryError("ValidationError", f"The parameter {path} is a list")
        items_node = (
            node if shape.get("flattened") else node.get(member_ref.get("locationName", "member"), {})
        )
        if not isinstance(items_node, dict):
            raise QueryError("ValidationError", f"The parameter {path} is a list")
        items = _numbered(items_node, path)
        return [_decode(m, member_ref["shape"], child, f"{path}.member.{i}") for i, child in items]
    if kind == "map":
        if not isinstance(node, dict):
            raise QueryError("ValidationError", f"The parameter {path} is a map")
        entries = node if shape.get("flattened") else node.get("entry", {})
        key_name = shape["key"].get("locationName", "key")
        value_name = shape["value"].get("locationName", "value")
        result: dict[str, Any] = {}
        for i, entry in _numbered(entries, path):
            if not isinstance(entry, dict) or key_name not in entry:
                raise QueryError("ValidationError", f"The parameter {path}.entry.{i} needs a key")
            key = _decode(m, shape["key"]["shape"], entry[key_name], f"{path}.entry.{i}.key")
            result[key] = _decode(m, shape["value"]["shape"], entry.get(value_name, ""), f"{path}.{key}")
        return result
    if isinstance(node, dict):
        raise QueryError("ValidationError", f"The parameter {path} takes a value, not members")
    try:
        if kind in ("integer", "long"):
            return ec2_wire.decode_integer(shape, node, path)
        value = ec2_wire.decode_scalar(kind, node, path)
    except CodedError as e:
        raise QueryError("ValidationError", e.message) from None
    if kind == "string":
        _check_length(shape, value, path)
    return value


def _numbered(node: dict[str, Any], path: str) -> list[tuple[int, Any]]:
    items: list[tuple[int, Any]] = []
    for key, child in node.items():
        if not key.isdigit() or int(key) < 1:
            raise QueryError("ValidationError", f"The parameter {path}.{key} is not recognized")
        items.append((int(key), child))
    items.sort(key=lambda kv: kv[0])
    return items


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _check_length(shape: dict[str, Any], value: str, path: str) -> None:
    lo, hi = shape.get("min"), shape.get("max")
    if lo is not None and len(value) < int(lo):
        raise QueryError(
            "ValidationError",
            f"1 validation error detected: Value at '{_lower_first(path)}' failed to satisfy constraint: "
            f"Member must have length greater than or equal to {lo}",
        )
    if hi is not None and len(value) > int(hi):
        raise QueryError(
            "ValidationError",
            f"1 validation error detected: Value at '{_lower_first(path)}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {hi}",
        )


# -- responses -------------------------------------------------------------------------------------------

new_request_id = ec2_wire.new_request_id
format_timestamp = ec2_wire.format_timestamp


def render_response(service: str, action: str, result: dict[str, Any] | None, request_id: str) -> bytes:
    m = model(service)
    op = m.operations[action]
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<{action}Response xmlns="{m.xmlns}">',
    ]
    output_ref = op.get("output")
    if output_ref is not None:
        wrapper = output_ref.get("resultWrapper", f"{action}Result")
        out.append(f"<{wrapper}>")
        _render_members(m, output_ref["shape"], result or {}, out)
        out.append(f"</{wrapper}>")
    out.append(
        f"<ResponseMetadata><RequestId>{ec2_wire.xml_escape(request_id)}</RequestId></ResponseMetadata>"
    )
    out.append(f"</{action}Response>")
    return "".join(out).encode("utf-8")


def _render_members(m: Model, shape_name: str, data: dict[str, Any], out: list[str]) -> None:
    members = m.shapes[shape_name].get("members", {})
    unknown = set(data) - set(members)
    if unknown:
        raise ValueError(f"{shape_name} has no member(s) {sorted(unknown)}")
    for member, ref in members.items():
        value = data.get(member)
        if value is None:
            continue
        _render_value(m, ref["shape"], _member_name(member, ref), value, out)


def _render_value(m: Model, shape_name: str, tag: str, value: Any, out: list[str]) -> None:
    shape = m.shapes[shape_name]
    kind = shape["type"]
    if kind == "structure":
        out.append(f"<{tag}>")
        _render_members(m, shape_name, value, out)
        out.append(f"</{tag}>")
    elif kind == "list":
        member_ref = shape["member"]
        item_tag = member_ref.get("locationName", "member")
        out.append(f"<{tag}>")
        for item in value:
            _render_value(m, member_ref["shape"], item_tag, item, out)
        out.append(f"</{tag}>")
    elif kind == "map":
        out.append(f"<{tag}>")
        for key, item in value.items():
            out.append("<entry>")
            _render_value(m, shape["key"]["shape"], "key", key, out)
            _render_value(m, shape["value"]["shape"], "value", item, out)
            out.append("</entry>")
        out.append(f"</{tag}>")
    else:
        out.append(f"<{tag}>{ec2_wire.xml_escape(_scalar_text(value))}</{tag}>")


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_timestamp(value)
    return str(value)


def render_error(service: str, error: QueryError, request_id: str) -> bytes:
    m = model(service)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<ErrorResponse xmlns="{m.xmlns}"><Error><Type>{error.fault}</Type><Code>{ec2_wire.xml_escape(error.code)}</Code>'
        f"<Message>{ec2_wire.xml_escape(error.message)}</Message></Error><RequestId>{ec2_wire.xml_escape(request_id)}</RequestId>"
        "</ErrorResponse>"
    ).encode()
