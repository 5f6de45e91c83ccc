"""The walrus dispatch table and the access decision (euca/roles/walrus/dispatch.py, access.py, acl.py)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest

from euca.core.http import Response
from euca.core.identity import Principal
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.protocol.s3 import policy as s3_policy
from euca.roles.walrus import acl as acls
from euca.roles.walrus.access import ACL_ONLY, Access, BucketPolicy, decide
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.dispatch import HANDLERS, dispatch
from euca.roles.walrus.meta import BucketRow
from euca.roles.walrus.service import WalrusService

OWNER = Principal("111", "owner", "owner-cid", "admin", "AK1")
OTHER = Principal("222", "other", "other-cid", "admin", "AK2")


def test_every_endpoint_of_the_union_has_a_handler_and_every_handler_an_endpoint() -> None:
    # Unsupported is the one member answered without a handler (501 NotImplemented).
    assert set(s3.ENDPOINTS) - set(HANDLERS) == {s3.Unsupported}
    assert set(HANDLERS) - set(s3.ENDPOINTS) == set()


def _call(
    principal: Principal | None = None, query: str = "", headers: dict[str, str] | None = None
) -> S3Call:
    request = SimpleNamespace(query=query, headers=headers or {}, client=("10.0.0.1", 1234), context={})
    return S3Call(request, SimpleNamespace(principal=principal), "req")  # type: ignore[arg-type]


def _service(rules: dict[str, BucketPolicy] | None = None) -> Any:
    bucket = BucketRow(name="b", owner_id=OWNER.canonical_id, owner_name="owner", created=0.0, acl={})
    return SimpleNamespace(policies=rules or {}, buckets={"b": bucket}, store=None)


async def test_unsupported_endpoints_answer_not_implemented() -> None:
    with pytest.raises(S3Error) as e:
        await dispatch(_service(), _call(), s3.Unsupported("GET ?lifecycle", "b"))
    assert e.value.code == "NotImplemented" and "GET ?lifecycle" in e.value.message


async def test_a_bucket_without_rules_keeps_the_shared_acl_only_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Access] = []

    async def handler(svc: Any, call: S3Call, ep: Any) -> Response:
        seen.append(call.access)
        return Response(200, [], b"")

    monkeypatch.setitem(HANDLERS, s3.HeadBucket, handler)
    await dispatch(_service(), _call(OWNER), s3.HeadBucket("b"))
    await dispatch(
        _service({"b": BucketPolicy(public_access_block={"IgnorePublicAcls": True})}),
        _call(OWNER),
        s3.HeadBucket("b"),
    )
    assert seen[0] is ACL_ONLY
    assert seen[1] == Access("b", policy_grant=False, ignore_public_acls=True)


# -- the ACL check under a decision -------------------------------------------------------------------------


def test_acl_check_under_a_decision() -> None:
    public = acls.canned("public-read", OWNER.canonical_id, "owner")
    assert acls.allowed(public, None, "READ", ACL_ONLY)
    assert acls.allowed(public, OTHER, "READ", ACL_ONLY)
    assert not acls.allowed(public, OTHER, "WRITE", ACL_ONLY)
    ignoring = Access("b", ignore_public_acls=True)
    assert not acls.allowed(public, None, "READ", ignoring)
    assert acls.allowed(public, OWNER, "READ", ignoring)  # the owner's own FULL_CONTROL grant still counts
    granted = Access("b", policy_grant=True)
    assert acls.allowed(None, None, "WRITE", granted)
    assert not acls.allowed(None, OWNER, "READ", ACL_ONLY)
    assert acls.allowed({"owner": OWNER.canonical_id, "grants": []}, OWNER, "WRITE_ACP", ACL_ONLY)


# -- the decision -----------------------------------------------------------------------------------------


def _policy(
    effect: str, principal: Any, action: str = "s3:GetObject", resource: str = "arn:aws:s3:::b/*"
) -> BucketPolicy:
    text = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": effect, "Principal": principal, "Action": action, "Resource": resource}],
        }
    )
    return BucketPolicy(text, s3_policy.parse_policy(text, "b"))


async def test_an_allow_grants_and_names_its_bucket() -> None:
    rules = _policy("Allow", "*")
    access = await decide(_service(), _call(None), s3.GetObject("b", "k"), "b", rules)
    assert access == Access("b", policy_grant=True, ignore_public_acls=False)
    # Another action is left to the ACLs.
    access = await decide(_service(), _call(None), s3.PutObject("b", "k"), "b", rules)
    assert access == Access("b", policy_grant=False)


async def test_a_deny_refuses_even_the_owner_but_not_the_owner_managing_the_policy() -> None:
    rules = _policy("Deny", "*", action="s3:*", resource=["arn:aws:s3:::b", "arn:aws:s3:::b/*"])
    with pytest.raises(S3Error) as e:
        await decide(_service(), _call(OWNER), s3.GetObject("b", "k"), "b", rules)
    assert e.value.code == "AccessDenied"
    access = await decide(_service(), _call(OWNER), s3_policy.DeleteBucketPolicy("b"), "b", rules)
    assert not access.policy_grant
    with pytest.raises(S3Error):
        await decide(_service(), _call(OTHER), s3_policy.DeleteBucketPolicy("b"), "b", rules)


async def test_restrict_public_buckets_withdraws_a_public_allow_from_all_but_the_owner() -> None:
    rules = _policy("Allow", "*")
    rules.public_access_block = {"RestrictPublicBuckets": True}
    assert not (await decide(_service(), _call(OTHER), s3.GetObject("b", "k"), "b", rules)).policy_grant
    assert (await decide(_service(), _call(OWNER), s3.GetObject("b", "k"), "b", rules)).policy_grant


async def test_block_public_acls_refuses_requests_for_public_acls() -> None:
    rules = BucketPolicy(public_access_block={"BlockPublicAcls": True})
    public = s3.PutObject("b", "k", acl=s3.AclRequest("public-read", []))
    with pytest.raises(S3Error) as e:
        await decide(_service(), _call(OWNER), public, "b", rules)
    assert e.value.code == "AccessDenied"
    group = s3.PutBucketAcl(
        "b", acl=s3.AclRequest(None, [s3.Grant("READ", "Group", s3.AUTHENTICATED_USERS, "")])
    )
    with pytest.raises(S3Error):
        await decide(_service(), _call(OWNER), group, "b", rules)
    private = s3.PutObject("b", "k", acl=s3.AclRequest("private", []))
    assert await decide(_service(), _call(OWNER), private, "b", rules) == Access("b")


async def test_policy_conditions_see_the_request() -> None:
    text = json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:ListBucket",
                    "Resource": "arn:aws:s3:::b",
                    "Condition": {"StringEquals": {"s3:prefix": "public/"}},
                }
            ]
        }
    )
    rules = BucketPolicy(text, s3_policy.parse_policy(text, "b"))
    listing = s3.ListObjects("b", prefix="public/")
    assert (await decide(_service(), _call(None, query="prefix=public/"), listing, "b", rules)).policy_grant
    assert not (
        await decide(_service(), _call(None, query="prefix=secret/"), listing, "b", rules)
    ).policy_grant


# -- the endpoint's permission ------------------------------------------------------------------------------


def _instance(cls: type) -> Any:
    required = {
        f.name: {"bucket": "b", "key": "k"}.get(f.name, "")
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return cls(**required)


ON_A_BUCKET = [cls for cls in s3.ENDPOINTS if cls.permission.of != "service"]


@pytest.mark.parametrize("cls", ON_A_BUCKET, ids=lambda cls: cls.__name__)
def test_authorized_bucket_checks_what_the_endpoint_class_requires(cls: type) -> None:
    svc = WalrusService(None, None, None, "euca-1")  # type: ignore[arg-type]
    svc.buckets["b"] = BucketRow(
        name="b",
        owner_id=OWNER.canonical_id,
        owner_name="owner",
        created=0.0,
        acl=acls.canned("private", OWNER.canonical_id, "owner"),
    )
    ep = _instance(cls)
    assert svc.authorized_bucket(_call(OWNER), ep) is svc.buckets["b"]
    granted = _call(OTHER)
    granted.access = Access("b", policy_grant=True)
    assert svc.authorized_bucket(granted, ep) is svc.buckets["b"]
    if cls.permission.of == "object":
        # Only the bucket here: the object's ACL is checked once the object is read.
        assert svc.authorized_bucket(_call(OTHER), ep) is svc.buckets["b"]
    else:
        with pytest.raises(S3Error) as e:
            svc.authorized_bucket(_call(OTHER), ep)
        assert e.value.code == "AccessDenied"
    svc.buckets.clear()
    with pytest.raises(S3Error) as e:
        svc.authorized_bucket(_call(OWNER), ep)
    assert e.value.code == "NoSuchBucket"


def test_the_public_read_write_acl_opens_read_and_write_but_not_ownership() -> None:
    svc = WalrusService(None, None, None, "euca-1")  # type: ignore[arg-type]
    svc.buckets["b"] = BucketRow(
        name="b",
        owner_id=OWNER.canonical_id,
        owner_name="owner",
        created=0.0,
        acl=acls.canned("public-read-write", OWNER.canonical_id, "owner"),
    )
    assert svc.authorized_bucket(_call(None), s3.PutObject("b", "k")).name == "b"
    assert svc.authorized_bucket(_call(None), s3.ListObjects("b")).name == "b"
    with pytest.raises(S3Error):
        svc.authorized_bucket(_call(None), s3.GetBucketAcl("b"))
    with pytest.raises(S3Error):
        svc.authorized_bucket(_call(OTHER), s3.DeleteBucket("b"))
