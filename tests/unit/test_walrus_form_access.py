"""access.decide_form_upload: POST Object judged as a PutObject by the form's signer under the bucket's rules
(found auditing issue 11: dispatch judges the unsigned request, as anonymous, with no action)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from euca.core.identity import Principal
from euca.protocol import s3
from euca.protocol.s3 import S3Error
from euca.protocol.s3 import policy as s3_policy
from euca.roles.walrus.access import ACL_ONLY, BucketPolicy, decide_form_upload
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.meta import BucketRow

OWNER = Principal("111", "owner", "owner-cid", "admin", "AK1")
OTHER = Principal("222", "other", "other-cid", "admin", "AK2")


def unsigned_call() -> S3Call:
    request = SimpleNamespace(query="", headers={}, client=("10.0.0.1", 1234), context={})
    return S3Call(request, SimpleNamespace(principal=None), "req")  # type: ignore[arg-type]


def service(rules: BucketPolicy | None) -> Any:
    bucket = BucketRow(name="b", owner_id=OWNER.canonical_id, owner_name="owner", created=0.0, acl={})
    return SimpleNamespace(policies={"b": rules} if rules else {}, buckets={"b": bucket}, store=None)


def rules_of(*statements: dict[str, Any], block: dict[str, bool] | None = None) -> BucketPolicy:
    text = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
    return BucketPolicy(text, s3_policy.parse_policy(text.encode(), "b"), block)


def statement(effect: str, principal: Any, resource: str = "arn:aws:s3:::b/*") -> dict[str, Any]:
    return {"Effect": effect, "Principal": principal, "Action": "s3:PutObject", "Resource": resource}


async def test_no_rules_leave_the_acls_to_decide() -> None:
    access = await decide_form_upload(service(None), unsigned_call(), "b", "k", OTHER, s3.AclRequest())
    assert access is ACL_ONLY


async def test_a_deny_naming_the_signer_holds() -> None:
    rules = rules_of(statement("Deny", {"AWS": OTHER.account_id}))
    with pytest.raises(S3Error) as e:
        await decide_form_upload(service(rules), unsigned_call(), "b", "k", OTHER, s3.AclRequest())
    assert e.value.code == "AccessDenied"
    access = await decide_form_upload(service(rules), unsigned_call(), "b", "k", OWNER, s3.AclRequest())
    assert not access.policy_grant


async def test_an_allow_naming_the_signer_grants_on_the_key() -> None:
    rules = rules_of(statement("Allow", {"AWS": OTHER.account_id}, "arn:aws:s3:::b/uploads/*"))
    grant = await decide_form_upload(
        service(rules), unsigned_call(), "b", "uploads/x", OTHER, s3.AclRequest()
    )
    assert grant.policy_grant
    elsewhere = await decide_form_upload(
        service(rules), unsigned_call(), "b", "other/x", OTHER, s3.AclRequest()
    )
    assert not elsewhere.policy_grant
    anonymous = await decide_form_upload(
        service(rules), unsigned_call(), "b", "uploads/x", None, s3.AclRequest()
    )
    assert not anonymous.policy_grant


async def test_block_public_acls_sees_the_form_acl() -> None:
    rules = BucketPolicy(public_access_block={"BlockPublicAcls": True})
    with pytest.raises(S3Error):
        await decide_form_upload(
            service(rules), unsigned_call(), "b", "k", OWNER, s3.AclRequest("public-read", [])
        )
    await decide_form_upload(service(rules), unsigned_call(), "b", "k", OWNER, s3.AclRequest("private", []))
