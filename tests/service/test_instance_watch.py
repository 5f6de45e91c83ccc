"""Instances reach running (and terminated) without waiting for the poll intervals: after RunInstances the CC
polls the instances' nodes soon and then less and less often while they are pending, and the CLC does the
same with its clusters after RunInstances/TerminateInstances while instances are in transition.

One box (`--role all`, the NC on libvirt's test:///default driver) with poll intervals of an hour: only
those short follow-up polls can bring the news within the test's wait."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers.instances import instances_of, register_tiny_image, wait_for, wait_state
from helpers.server import start_euca

HOUR = 3600.0


@contextmanager
def one_box(tmp_path: Path, **settings: Any) -> Iterator[tuple[Any, str]]:
    """A one-box cloud whose poll intervals are an hour, its EC2 client and a registered tiny image."""
    overrides = {"nc.libvirt_uri": "test:///default", "clc.poll_interval": HOUR, "cc.poll_interval": HOUR}
    server = start_euca(tmp_path / "onebox", roles="all", overrides={**overrides, **settings})
    euca = next(server)
    try:
        yield euca.client("ec2"), register_tiny_image(euca, tmp_path)
    finally:
        server.close()


def test_run_and_terminate_do_not_wait_for_the_poll_intervals(tmp_path: Path) -> None:
    with one_box(tmp_path) as (ec2, image_id):
        ids = instances_of(
            ec2.run_instances(ImageId=image_id, MinCount=3, MaxCount=3, InstanceType="m1.small")
        )
        wait_state(ec2, ids, "running")
        ec2.terminate_instances(InstanceIds=ids)
        wait_state(ec2, ids, "terminated")
        # A second request after the first settled is watched afresh.
        more = instances_of(
            ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="m1.small")
        )
        wait_state(ec2, more, "running")


def test_a_slot_is_free_for_a_relaunch_once_its_instance_is_terminated(tmp_path: Path) -> None:
    """The node offers two cores; with both taken a third launch is refused. Once one instance is reported
    terminated its core is free to the next RunInstances without waiting for the hour-long poll interval."""
    import botocore.exceptions

    with one_box(tmp_path, **{"nc.cores": 2}) as (ec2, image_id):
        ids = instances_of(
            ec2.run_instances(ImageId=image_id, MinCount=2, MaxCount=2, InstanceType="m1.small")
        )
        wait_state(ec2, ids, "running")
        try:
            ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="m1.small")
            raise AssertionError("a third m1.small fitted on a node of two cores")
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "InsufficientInstanceCapacity"
        ec2.terminate_instances(InstanceIds=ids[:1])
        wait_state(ec2, ids[:1], "terminated")
        # The relaunch may race the full poll the termination set off by a few milliseconds; it must not wait
        # for the poll interval (an hour here).
        relaunched = wait_for(
            "a relaunch into the freed slot", lambda: _launch_one(ec2, image_id), timeout=30
        )
        wait_state(ec2, relaunched, "running")


def _launch_one(ec2: Any, image_id: str) -> list[str] | None:
    import botocore.exceptions

    try:
        return instances_of(
            ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="m1.small")
        )
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] != "InsufficientInstanceCapacity":
            raise
        return None
