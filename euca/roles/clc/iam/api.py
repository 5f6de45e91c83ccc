"""IAM's handlers: the decoded parameters (keyed by the model's member names) in, the result members out.
The rules and the tables are euca.core.iam's; these only pick the parameters and page the lists."""

from __future__ import annotations

from typing import Any

from euca.core.iam import policies, roles, users
from euca.core.iam.common import page
from euca.roles.clc.iam.call import Handler, QueryCall

# Actions that act on the caller when no UserName is given.
CALLER_DEFAULT_ACTIONS = frozenset(
    {
        "GetUser",
        "CreateAccessKey",
        "ListAccessKeys",
        "UpdateAccessKey",
        "DeleteAccessKey",
        "CreateLoginProfile",
        "GetLoginProfile",
        "DeleteLoginProfile",
        "UploadSigningCertificate",
        "ListSigningCertificates",
    }
)


def _user_or_caller(call: QueryCall, p: dict[str, Any]) -> str:
    """Key, certificate and login operations act on the caller when no UserName is given, as IAM does."""
    return str(p.get("UserName") or call.principal.user_name)


# -- users -----------------------------------------------------------------------------------------------


async def create_user(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    user = await call.write(lambda tx: users.create_user(tx, call.account_id, p["UserName"], p.get("Path")))
    return {"User": user}


async def get_user(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    name = _user_or_caller(call, p)
    return {"User": await call.read(lambda tx: users.get_user(tx, call.account_id, name))}


async def list_users(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    found = await call.read(lambda tx: users.list_users(tx, call.account_id, p.get("PathPrefix")))
    return page(found, p, lambda u: str(u["UserName"]), "Users")


async def update_user(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: users.update_user(
            tx, call.account_id, p["UserName"], p.get("NewUserName"), p.get("NewPath")
        )
    )


async def delete_user(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(lambda tx: users.delete_user(tx, call.account_id, p["UserName"]))


# -- groups ----------------------------------------------------------------------------------------------


async def create_group(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    group = await call.write(
        lambda tx: users.create_group(tx, call.account_id, p["GroupName"], p.get("Path"))
    )
    return {"Group": group}


async def get_group(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    group, members = await call.read(lambda tx: users.get_group(tx, call.account_id, p["GroupName"]))
    return {"Group": group, **page(members, p, lambda u: str(u["UserName"]), "Users")}


async def list_groups(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    found = await call.read(lambda tx: users.list_groups(tx, call.account_id, p.get("PathPrefix")))
    return page(found, p, lambda g: str(g["GroupName"]), "Groups")


async def list_groups_for_user(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    found = await call.read(lambda tx: users.groups_for_user(tx, call.account_id, p["UserName"]))
    return page(found, p, lambda g: str(g["GroupName"]), "Groups")


async def update_group(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: users.update_group(
            tx, call.account_id, p["GroupName"], p.get("NewGroupName"), p.get("NewPath")
        )
    )


async def delete_group(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(lambda tx: users.delete_group(tx, call.account_id, p["GroupName"]))


async def add_user_to_group(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(lambda tx: users.add_user_to_group(tx, call.account_id, p["GroupName"], p["UserName"]))


async def remove_user_from_group(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: users.remove_user_from_group(tx, call.account_id, p["GroupName"], p["UserName"])
    )


# -- access keys -----------------------------------------------------------------------------------------


async def create_access_key(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    name = _user_or_caller(call, p)
    return {"AccessKey": await call.write(lambda tx: users.create_access_key(tx, call.account_id, name))}


async def list_access_keys(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    name = _user_or_caller(call, p)
    found = await call.read(lambda tx: users.list_access_keys(tx, call.account_id, name))
    return page(found, p, lambda k: str(k["AccessKeyId"]), "AccessKeyMetadata")


async def update_access_key(call: QueryCall, p: dict[str, Any]) -> None:
    name = _user_or_caller(call, p)
    await call.write(
        lambda tx: users.update_access_key(tx, call.account_id, name, p["AccessKeyId"], p["Status"])
    )


async def delete_access_key(call: QueryCall, p: dict[str, Any]) -> None:
    name = _user_or_caller(call, p)
    await call.write(lambda tx: users.delete_access_key(tx, call.account_id, name, p["AccessKeyId"]))


async def get_access_key_last_used(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    return await call.read(lambda tx: users.access_key_last_used(tx, call.account_id, p["AccessKeyId"]))


# -- login profiles and signing certificates --------------------------------------------------------------


async def create_login_profile(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    name = _user_or_caller(call, p)
    profile = await call.write(
        lambda tx: users.create_login_profile(
            tx, call.account_id, name, p.get("Password", ""), bool(p.get("PasswordResetRequired", False))
        )
    )
    return {"LoginProfile": profile}


async def get_login_profile(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    name = _user_or_caller(call, p)
    return {"LoginProfile": await call.read(lambda tx: users.get_login_profile(tx, call.account_id, name))}


async def update_login_profile(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: users.update_login_profile(
            tx, call.account_id, p["UserName"], p.get("Password"), p.get("PasswordResetRequired")
        )
    )


async def delete_login_profile(call: QueryCall, p: dict[str, Any]) -> None:
    name = _user_or_caller(call, p)
    await call.write(lambda tx: users.delete_login_profile(tx, call.account_id, name))


async def upload_signing_certificate(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    name = _user_or_caller(call, p)
    cert = await call.write(
        lambda tx: users.upload_signing_certificate(tx, call.account_id, name, p["CertificateBody"])
    )
    return {"Certificate": cert}


async def list_signing_certificates(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    name = _user_or_caller(call, p)
    found = await call.read(lambda tx: users.list_signing_certificates(tx, call.account_id, name))
    return page(found, p, lambda c: str(c["CertificateId"]), "Certificates")


async def update_signing_certificate(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: users.update_signing_certificate(tx, call.account_id, p["CertificateId"], p["Status"])
    )


async def delete_signing_certificate(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(lambda tx: users.delete_signing_certificate(tx, call.account_id, p["CertificateId"]))


# -- inline policies (users, groups, roles alike) --------------------------------------------------------


def _inline(kind: str) -> dict[str, Handler]:
    owner_key = f"{kind.capitalize()}Name"

    async def put(call: QueryCall, p: dict[str, Any]) -> None:
        await call.write(
            lambda tx: policies.put_inline(
                tx, call.account_id, kind, p[owner_key], p["PolicyName"], p["PolicyDocument"]
            )
        )

    async def get(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
        owner, name, document = await call.read(
            lambda tx: policies.get_inline(tx, call.account_id, kind, p[owner_key], p["PolicyName"])
        )
        return {owner_key: owner, "PolicyName": name, "PolicyDocument": document}

    async def list_(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
        names = await call.read(lambda tx: policies.list_inline(tx, call.account_id, kind, p[owner_key]))
        return page(names, p, str, "PolicyNames")

    async def delete(call: QueryCall, p: dict[str, Any]) -> None:
        await call.write(
            lambda tx: policies.delete_inline(tx, call.account_id, kind, p[owner_key], p["PolicyName"])
        )

    async def attach(call: QueryCall, p: dict[str, Any]) -> None:
        await call.write(lambda tx: policies.attach(tx, call.account_id, kind, p[owner_key], p["PolicyArn"]))

    async def detach(call: QueryCall, p: dict[str, Any]) -> None:
        await call.write(lambda tx: policies.detach(tx, call.account_id, kind, p[owner_key], p["PolicyArn"]))

    async def list_attached(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
        found = await call.read(lambda tx: policies.list_attached(tx, call.account_id, kind, p[owner_key]))
        return page(found, p, lambda a: str(a["PolicyArn"]), "AttachedPolicies")

    title = kind.capitalize()
    return {
        f"Put{title}Policy": put,
        f"Get{title}Policy": get,
        f"List{title}Policies": list_,
        f"Delete{title}Policy": delete,
        f"Attach{title}Policy": attach,
        f"Detach{title}Policy": detach,
        f"ListAttached{title}Policies": list_attached,
    }


# -- managed policies ------------------------------------------------------------------------------------


async def create_policy(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    created = await call.write(
        lambda tx: policies.create_policy(
            tx, call.account_id, p["PolicyName"], p.get("Path"), p["PolicyDocument"], p.get("Description")
        )
    )
    return {"Policy": created}


async def get_policy(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    return {"Policy": await call.read(lambda tx: policies.get_policy(tx, call.account_id, p["PolicyArn"]))}


async def list_policies(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    found = await call.read(
        lambda tx: policies.list_policies(
            tx, call.account_id, p.get("Scope", "All"), bool(p.get("OnlyAttached")), p.get("PathPrefix")
        )
    )
    return page(found, p, lambda x: str(x["Arn"]), "Policies")


async def delete_policy(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(lambda tx: policies.delete_policy(tx, call.account_id, p["PolicyArn"]))


async def create_policy_version(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    version = await call.write(
        lambda tx: policies.create_policy_version(
            tx, call.account_id, p["PolicyArn"], p["PolicyDocument"], bool(p.get("SetAsDefault"))
        )
    )
    del version["Document"]
    return {"PolicyVersion": version}


async def get_policy_version(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    version = await call.read(
        lambda tx: policies.get_policy_version(tx, call.account_id, p["PolicyArn"], p["VersionId"])
    )
    return {"PolicyVersion": version}


async def list_policy_versions(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    found = await call.read(lambda tx: policies.list_policy_versions(tx, call.account_id, p["PolicyArn"]))
    return page(found, p, lambda v: str(v["VersionId"]), "Versions")


async def delete_policy_version(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: policies.delete_policy_version(tx, call.account_id, p["PolicyArn"], p["VersionId"])
    )


async def set_default_policy_version(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: policies.set_default_policy_version(tx, call.account_id, p["PolicyArn"], p["VersionId"])
    )


async def list_entities_for_policy(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    found = await call.read(lambda tx: policies.list_entities_for_policy(tx, call.account_id, p["PolicyArn"]))
    return {**found, "IsTruncated": False}


# -- roles and instance profiles -------------------------------------------------------------------------


async def create_role(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    role = await call.write(
        lambda tx: roles.create_role(
            tx,
            call.account_id,
            p["RoleName"],
            p.get("Path"),
            p["AssumeRolePolicyDocument"],
            p.get("Description"),
            p.get("MaxSessionDuration"),
        )
    )
    return {"Role": role}


async def get_role(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    return {"Role": await call.read(lambda tx: roles.get_role(tx, call.account_id, p["RoleName"]))}


async def list_roles(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    found = await call.read(lambda tx: roles.list_roles(tx, call.account_id, p.get("PathPrefix")))
    return page(found, p, lambda r: str(r["RoleName"]), "Roles")


async def update_role(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    await call.write(
        lambda tx: roles.update_role(
            tx, call.account_id, p["RoleName"], p.get("Description"), p.get("MaxSessionDuration")
        )
    )
    return {}


async def update_assume_role_policy(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: roles.update_trust_policy(tx, call.account_id, p["RoleName"], p["PolicyDocument"])
    )


async def delete_role(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(lambda tx: roles.delete_role(tx, call.account_id, p["RoleName"]))


async def create_instance_profile(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    profile = await call.write(
        lambda tx: roles.create_instance_profile(tx, call.account_id, p["InstanceProfileName"], p.get("Path"))
    )
    return {"InstanceProfile": profile}


async def get_instance_profile(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    profile = await call.read(
        lambda tx: roles.get_instance_profile(tx, call.account_id, p["InstanceProfileName"])
    )
    return {"InstanceProfile": profile}


async def list_instance_profiles(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    found = await call.read(lambda tx: roles.list_instance_profiles(tx, call.account_id, p.get("PathPrefix")))
    return page(found, p, lambda i: str(i["InstanceProfileName"]), "InstanceProfiles")


async def list_instance_profiles_for_role(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    found = await call.read(
        lambda tx: roles.list_instance_profiles_for_role(tx, call.account_id, p["RoleName"])
    )
    return page(found, p, lambda i: str(i["InstanceProfileName"]), "InstanceProfiles")


async def delete_instance_profile(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(lambda tx: roles.delete_instance_profile(tx, call.account_id, p["InstanceProfileName"]))


async def add_role_to_instance_profile(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: roles.add_role_to_instance_profile(
            tx, call.account_id, p["InstanceProfileName"], p["RoleName"]
        )
    )


async def remove_role_from_instance_profile(call: QueryCall, p: dict[str, Any]) -> None:
    await call.write(
        lambda tx: roles.remove_role_from_instance_profile(
            tx, call.account_id, p["InstanceProfileName"], p["RoleName"]
        )
    )


async def get_account_summary(call: QueryCall, p: dict[str, Any]) -> dict[str, Any]:
    return {"SummaryMap": await call.read(lambda tx: roles.account_summary(tx, call.account_id))}


HANDLERS: dict[str, Handler] = {
    "CreateUser": create_user,
    "GetUser": get_user,
    "ListUsers": list_users,
    "UpdateUser": update_user,
    "DeleteUser": delete_user,
    "CreateGroup": create_group,
    "GetGroup": get_group,
    "ListGroups": list_groups,
    "ListGroupsForUser": list_groups_for_user,
    "UpdateGroup": update_group,
    "DeleteGroup": delete_group,
    "AddUserToGroup": add_user_to_group,
    "RemoveUserFromGroup": remove_user_from_group,
    "CreateAccessKey": create_access_key,
    "ListAccessKeys": list_access_keys,
    "UpdateAccessKey": update_access_key,
    "DeleteAccessKey": delete_access_key,
    "GetAccessKeyLastUsed": get_access_key_last_used,
    "CreateLoginProfile": create_login_profile,
    "GetLoginProfile": get_login_profile,
    "UpdateLoginProfile": update_login_profile,
    "DeleteLoginProfile": delete_login_profile,
    "UploadSigningCertificate": upload_signing_certificate,
    "ListSigningCertificates": list_signing_certificates,
    "UpdateSigningCertificate": update_signing_certificate,
    "DeleteSigningCertificate": delete_signing_certificate,
    **_inline("user"),
    **_inline("group"),
    **_inline("role"),
    "CreatePolicy": create_policy,
    "GetPolicy": get_policy,
    "ListPolicies": list_policies,
    "DeletePolicy": delete_policy,
    "CreatePolicyVersion": create_policy_version,
    "GetPolicyVersion": get_policy_version,
    "ListPolicyVersions": list_policy_versions,
    "DeletePolicyVersion": delete_policy_version,
    "SetDefaultPolicyVersion": set_default_policy_version,
    "ListEntitiesForPolicy": list_entities_for_policy,
    "CreateRole": create_role,
    "GetRole": get_role,
    "ListRoles": list_roles,
    "UpdateRole": update_role,
    "UpdateAssumeRolePolicy": update_assume_role_policy,
    "DeleteRole": delete_role,
    "CreateInstanceProfile": create_instance_profile,
    "GetInstanceProfile": get_instance_profile,
    "ListInstanceProfiles": list_instance_profiles,
    "ListInstanceProfilesForRole": list_instance_profiles_for_role,
    "DeleteInstanceProfile": delete_instance_profile,
    "AddRoleToInstanceProfile": add_role_to_instance_profile,
    "RemoveRoleFromInstanceProfile": remove_role_from_instance_profile,
    "GetAccountSummary": get_account_summary,
}
