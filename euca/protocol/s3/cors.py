"""S3 CORS (sans-I/O): the CORSConfiguration XML, and matching a request's Origin/method/headers against the rules
to produce the Access-Control-* response headers. The endpoints (?cors, the OPTIONS preflight) are in
endpoints.py with all the others, and re-exported here."""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

from euca.protocol.s3.endpoints import DeleteBucketCors, GetBucketCors, Preflight, PutBucketCors
from euca.protocol.s3.errors import S3Error
from euca.protocol.s3.wire import S3_NS
from euca.protocol.s3.xml import parse_document

METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")

Rule = dict[str, Any]  # {"id", "methods", "origins", "headers", "expose", "max_age"}


def parse_cors_body(body: bytes) -> list[Rule]:
    root = parse_document(body)
    rules: list[Rule] = []
    for r in root:
        if r.tag.rsplit("}", 1)[-1] != "CORSRule":
            continue
        rule: Rule = {"id": "", "methods": [], "origins": [], "headers": [], "expose": [], "max_age": None}
        for c in r:
            tag, text = c.tag.rsplit("}", 1)[-1], (c.text or "").strip()
            if tag == "AllowedMethod":
                if text not in METHODS:
                    raise S3Error(
                        "InvalidRequest",
                        f"Found unsupported HTTP method in CORS config. Unsupported method is {text}",
                    )
                rule["methods"].append(text)
            elif tag == "AllowedOrigin":
                rule["origins"].append(text)
            elif tag == "AllowedHeader":
                rule["headers"].append(text)
            elif tag == "ExposeHeader":
                rule["expose"].append(text)
            elif tag == "MaxAgeSeconds" and text.isdigit():
                rule["max_age"] = int(text)
            elif tag == "ID":
                rule["id"] = text
        if not rule["methods"] or not rule["origins"]:
            raise S3Error("MalformedXML")
        rules.append(rule)
    if not rules or len(rules) > 100:
        raise S3Error("MalformedXML")
    return rules


def render_cors(rules: list[Rule]) -> bytes:
    out = []
    for r in rules:
        inner = f"<ID>{escape(r['id'])}</ID>" if r.get("id") else ""
        inner += "".join(f"<AllowedHeader>{escape(h)}</AllowedHeader>" for h in r["headers"])
        inner += "".join(f"<AllowedMethod>{escape(m)}</AllowedMethod>" for m in r["methods"])
        inner += "".join(f"<AllowedOrigin>{escape(o)}</AllowedOrigin>" for o in r["origins"])
        inner += "".join(f"<ExposeHeader>{escape(h)}</ExposeHeader>" for h in r["expose"])
        if r.get("max_age") is not None:
            inner += f"<MaxAgeSeconds>{r['max_age']}</MaxAgeSeconds>"
        out.append(f"<CORSRule>{inner}</CORSRule>")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<CORSConfiguration xmlns="{S3_NS}">{"".join(out)}'
        f"</CORSConfiguration>"
    ).encode()


def _wild(pattern: str, value: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def match(
    rules: list[Rule], origin: str, method: str, request_headers: list[str]
) -> list[tuple[str, str]] | None:
    """The Access-Control-* headers for the first rule allowing origin, method and headers; None when none does."""
    for r in rules:
        hit = next((o for o in r["origins"] if _wild(o, origin)), None)
        if hit is None or method not in r["methods"]:
            continue
        if not all(any(_wild(a, h) for a in r["headers"]) for h in request_headers):
            continue
        out = [
            ("Access-Control-Allow-Origin", "*" if hit == "*" else origin),
            ("Access-Control-Allow-Methods", ", ".join(r["methods"])),
        ]
        if request_headers:
            out.append(("Access-Control-Allow-Headers", ", ".join(request_headers)))
        if r["expose"]:
            out.append(("Access-Control-Expose-Headers", ", ".join(r["expose"])))
        if r.get("max_age") is not None:
            out.append(("Access-Control-Max-Age", str(r["max_age"])))
        if hit != "*":
            out.append(("Vary", "Origin"))
        return out
    return None


def request_header_names(value: str | None) -> list[str]:
    return [h.strip().lower() for h in (value or "").split(",") if h.strip()]


__all__ = [
    "METHODS",
    "DeleteBucketCors",
    "GetBucketCors",
    "Preflight",
    "PutBucketCors",
    "Rule",
    "match",
    "parse_cors_body",
    "render_cors",
    "request_header_names",
]
