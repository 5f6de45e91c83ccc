"""The one-box: what a process running the CLC and Walrus together does once every role is up.

The supervisor knows roles only by name and runs the start hooks it is handed; the command line hands it
`start_hooks(roles)`. Today that is one: the default machine image, built from Debian packages on
this machine and registered by the admin account through the EC2 and S3 APIs at the first start
(euca.images.default_image), unless the configuration's `default_image` is false.
"""

from __future__ import annotations

import logging

from euca.core.identity import ADMIN_ACCOUNT, ADMIN_USER
from euca.core.roles import RoleContext
from euca.core.supervisor import StartHook
from euca.images.default_image import EC2_PATH, S3_PATH, STATE_FILE, Uploader, ensure_default_image

log = logging.getLogger("euca.bootimage")


def start_hooks(role_names: list[str]) -> list[StartHook]:
    """The hooks for a process running these roles: the default image where the CLC and Walrus both run."""
    if {"clc", "walrus"} <= set(role_names):
        return [register_default_image]
    return []


async def register_default_image(ctx: RoleContext) -> None:
    """The admin account registers the default image through the EC2 and S3 APIs, as any user would; once
    (later starts read the state file). A failure is logged: a cloud without its default image still runs."""
    if not ctx.config.default_image:
        log.info("default image skipped: default_image=false")
        return
    account, key, _ = ctx.identity.ensure_admin()
    creds = ctx.config.data_path / "credentials" / ADMIN_ACCOUNT / ADMIN_USER
    try:
        cert_pem, key_pem = (creds / "cert.pem").read_bytes(), (creds / "pk.pem").read_bytes()
    except OSError as e:
        log.warning("default image skipped: admin certificate unreadable (%s)", e)
        return
    up = Uploader(
        ec2_url=ctx.endpoints["clc"].rstrip("/") + EC2_PATH,
        s3_url=ctx.endpoints["walrus"].rstrip("/") + S3_PATH,
        access_key_id=key.access_key_id,
        secret_key=key.secret_key,
        region=ctx.config.region,
        account_id=account.account_id,
        user_cert_pem=cert_pem,
        user_key_pem=key_pem,
        cloud_cert_pem=ctx.ca.cert_pem,
    )
    await ensure_default_image(up, ctx.config.data_path / STATE_FILE, work_dir=ctx.config.data_path)
