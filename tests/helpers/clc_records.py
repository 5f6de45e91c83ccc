"""Rows the CLC's records tests start from, built one way for every test that needs them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from euca.roles.clc.instances import records as instances


def new_reservation(account_id: str, **fields: Any) -> instances.NewReservation:
    """A RunInstances request as placed: two m1.small instances of emi-00000001 (x86_64, no key, no user
    data, no groups, no tags) in zone z1 of cluster c1, asked by the account's root; `fields` override."""
    default = instances.NewReservation(
        account_id=account_id,
        requester=f"arn:aws:iam::{account_id}:root",
        client_token=None,
        request_digest="d",
        groups=[],
        group_ids=[],
        image_id="emi-00000001",
        kernel_id=None,
        ramdisk_id=None,
        instance_type="m1.small",
        key_name=None,
        user_data=b"",
        architecture="x86_64",
        zone="z1",
        cluster="c1",
        count=2,
        tags=[],
    )
    return replace(default, **fields)
