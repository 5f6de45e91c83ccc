"""For tests that run instances through the EC2 API: polling until instances reach a state, and a tiny real
bundle registered as a machine image."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.image_bundles import admin_signer, random_file, upload


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll `check` until it returns something true (the CLC polls its clusters every few tenths of a second
    in these tests); AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def instances_of(reservation: dict[str, Any]) -> list[str]:
    return [i["InstanceId"] for i in reservation["Instances"]]


def describe(ec2: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    return {
        i["InstanceId"]: i
        for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]
        for i in r["Instances"]
    }


def wait_state(ec2: Any, ids: list[str], state: str) -> dict[str, dict[str, Any]]:
    """Poll until every instance of `ids` is in `state`; their descriptions then."""
    reached: dict[str, dict[str, Any]] = wait_for(
        f"{ids} {state}",
        lambda: (
            (found := describe(ec2, ids))
            and all(i["State"]["Name"] == state for i in found.values())
            and found
        ),
    )
    return reached


def register_tiny_image(euca: Any, tmp: Path) -> str:
    """A 4 KiB random image bundled as the admin, uploaded to a new bucket and registered; its emi id."""
    result = admin_signer(euca).bundle(random_file(tmp / "tiny.img", 4096), tmp / "bundle")
    location = upload(euca.client("s3"), unique("tiny"), result)
    image_id: str = euca.client("ec2").register_image(Name=unique("tiny"), ImageLocation=location)["ImageId"]
    return image_id
