"""Instances reach running (and terminated) without waiting for the poll intervals: after RunInstances the CC
polls the instances' nodes soon and then less and less often while they are pending, and the CLC does the
same with its clusters after RunInstances/TerminateInstances while instances are in transition.

One box (`--role all`, the NC on libvirt's test:///default driver) with poll intervals of an hour: only
those short follow-up polls can bring the news within the test's wait."""

from __future__ import annotations

from pathlib import Path

from helpers.instances import instances_of, register_tiny_image, wait_state
from helpers.server import start_euca

HOUR = 3600.0


def test_run_and_terminate_do_not_wait_for_the_poll_intervals(tmp_path: Path) -> None:
    overrides = {"nc.libvirt_uri": "test:///default", "clc.poll_interval": HOUR, "cc.poll_interval": HOUR}
    server = start_euca(tmp_path / "onebox", roles="all", overrides=overrides)
    euca = next(server)
    try:
        ec2 = euca.client("ec2")
        image_id = register_tiny_image(euca, tmp_path)
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
    finally:
        server.close()
