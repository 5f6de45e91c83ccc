"""The CLC's reconciliation of its instance table with what a CC reports (pure), and applying it to a real
SQLite store with the CLC's schema."""

from __future__ import annotations

from pathlib import Path

from euca.core.store import Store, Tx
from euca.protocol.cluster import GUEST_POWERED_OFF, STOPPED_REASON, Ec2State, InstanceStatus, NcState
from euca.roles.clc import schema
from euca.roles.clc.instances.reconcile import Known, reconcile
from euca.roles.clc.instances.records import apply_reconciliation, forget_terminated, known_instances
from euca.roles.clc.topology import records as topology

LOST_AFTER = 600.0


def status(
    instance_id: str,
    state: Ec2State,
    *,
    node: str = "n1",
    ip: str | None = "10.0.0.5",
    reason: str | None = None,
) -> InstanceStatus:
    nc_states: dict[Ec2State, NcState] = {
        "pending": "staging",
        "running": "running",
        "shutting-down": "teardown",
        "terminated": "terminated",
    }
    nc_state = nc_states[state]
    return InstanceStatus(
        instance_id,
        "r-00000001",
        "123456789012",
        state,
        nc_state,
        node,
        "m1.small",
        "emi-00000001",
        private_ip=ip,
        mac="d0:0d:00:00:00:01",
        reason=reason,
    )


def test_reported_state_node_and_address_are_taken() -> None:
    known = [Known("i-00000001", "pending", last_seen=0.0)]
    result = reconcile(known, [status("i-00000001", "running")], now=10.0, node_lost_timeout=LOST_AFTER)
    (u,) = result.updates
    assert (u.state, u.node, u.private_ip, u.previous) == ("running", "n1", "10.0.0.5", "pending")
    assert result.seen == ["i-00000001"] and not result.lost and not result.gone


def test_nothing_changed_means_no_update_but_seen() -> None:
    known = [Known("i-00000001", "running", "n1", "10.0.0.5", "d0:0d:00:00:00:01", 0.0)]
    result = reconcile(known, [status("i-00000001", "running")], now=10.0, node_lost_timeout=LOST_AFTER)
    assert result.updates == [] and result.seen == ["i-00000001"]


def test_states_never_go_back() -> None:
    known = [Known("i-00000001", "shutting-down", "n1", "10.0.0.5", "d0:0d:00:00:00:01")]
    result = reconcile(known, [status("i-00000001", "running")], now=1.0, node_lost_timeout=LOST_AFTER)
    assert result.updates == []
    # the CC still runs what the CLC is terminating: tell it again
    assert result.terminate_again == ["i-00000001"]
    known = [Known("i-00000002", "running")]
    result = reconcile(known, [status("i-00000002", "pending")], now=1.0, node_lost_timeout=LOST_AFTER)
    assert [u.state for u in result.updates] == ["running"]  # node/ip learned, state kept


def test_terminated_by_the_cc_carries_its_reason_unless_we_asked() -> None:
    known = [Known("i-00000001", "running"), Known("i-00000002", "shutting-down")]
    reported = [
        status("i-00000001", "terminated", reason="image download failed"),
        status("i-00000002", "terminated", reason="terminated by request"),
    ]
    result = reconcile(known, reported, now=1.0, node_lost_timeout=LOST_AFTER)
    reasons = {u.instance_id: (u.state, u.reason) for u in result.updates}
    assert reasons == {
        "i-00000001": ("terminated", "image download failed"),
        "i-00000002": ("terminated", None),
    }


def test_unreported_instances_lost_after_the_timeout_and_terminating_ones_gone_at_once() -> None:
    known = [
        Known("i-00000001", "running", last_seen=100.0),  # silent for 600.5 s: lost
        Known("i-00000002", "pending", last_seen=500.0),  # silent for 200.5 s: still waiting
        Known("i-00000003", "shutting-down", last_seen=650.0),  # the CC forgot it: it is gone
        Known("i-00000004", "terminated", last_seen=0.0),  # already terminated: nothing to do
    ]
    result = reconcile(known, [status("i-00000099", "running")], now=700.5, node_lost_timeout=LOST_AFTER)
    assert result.lost == ["i-00000001"]
    assert result.gone == ["i-00000003"]
    assert result.unknown == ["i-00000099"]
    assert result.updates == [] and result.seen == []


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state.db")
    schema.migrate(store)
    return store


def _insert(
    tx: Tx, instance_id: str, state: str, *, last_seen: float, terminated_at: float | None = None
) -> None:
    tx.execute(
        "INSERT OR IGNORE INTO clc_reservations(reservation_id, account_id, requester, request_digest, created) "
        "VALUES('r-00000001', '123456789012', 'arn', 'x', 0)"
    )
    tx.execute(
        "INSERT INTO clc_instances(instance_id, reservation_id, account_id, launch_index, image_id, instance_type, "
        "zone, cluster, state, launch_time, last_seen, terminated_at) "
        "VALUES(?, 'r-00000001', '123456789012', 0, 'emi-00000001', 'm1.small', 'z', 'c1', ?, 0, ?, ?)",
        (instance_id, state, last_seen, terminated_at),
    )


def test_apply_to_the_store_and_forget_after_ttl(tmp_path: Path) -> None:
    store = _store(tmp_path)

    def setup(tx: Tx) -> None:
        topology.register_cluster(tx, "c1", "https://127.0.0.1:8774", "z")
        _insert(tx, "i-00000001", "pending", last_seen=0.0)
        _insert(tx, "i-00000002", "running", last_seen=0.0)
        _insert(tx, "i-00000003", "shutting-down", last_seen=0.0)
        _insert(tx, "i-00000004", "terminated", last_seen=0.0, terminated_at=5.0)
        tx.execute(
            "INSERT INTO clc_tags(account_id, resource_id, resource_type, key, value) "
            "VALUES('123456789012', 'i-00000004', 'instance', 'k', 'v')"
        )

    store.write_sync(setup)
    known = store.read_sync(lambda tx: known_instances(tx, "c1", since=0.0))
    assert {k.instance_id for k in known} == {"i-00000001", "i-00000002", "i-00000003", "i-00000004"}
    result = reconcile(known, [status("i-00000001", "running")], now=1000.0, node_lost_timeout=LOST_AFTER)
    store.write_sync(lambda tx: apply_reconciliation(tx, result, 1000.0))
    rows = {
        r["instance_id"]: r
        for r in store.read_sync(lambda tx: tx.all("SELECT * FROM clc_instances ORDER BY instance_id"))
    }
    assert (
        rows["i-00000001"]["state"],
        rows["i-00000001"]["private_ip"],
        rows["i-00000001"]["last_seen"],
    ) == (
        "running",
        "10.0.0.5",
        1000.0,
    )
    assert rows["i-00000002"]["state"] == "terminated"  # lost
    assert rows["i-00000002"]["state_reason_code"] == "Server.InternalError"
    assert rows["i-00000002"]["terminated_at"] == 1000.0
    assert rows["i-00000003"]["state"] == "terminated"  # gone
    # i-00000004 ended at 5: forgotten once the TTL has passed, with its tags; the reservation stays for the rest
    assert store.write_sync(lambda tx: forget_terminated(tx, before=6.0)) == ["i-00000004"]
    assert store.read_sync(lambda tx: tx.scalar("SELECT COUNT(*) FROM clc_tags")) == 0
    assert store.write_sync(lambda tx: forget_terminated(tx, before=2000.0)) == ["i-00000002", "i-00000003"]
    assert store.read_sync(lambda tx: tx.scalar("SELECT COUNT(*) FROM clc_reservations")) == 1
    store.close()


# A lost instance whose node comes back (ARCHITECTURE.md, "A node its CC reports down"): the rule is that
# `terminated` is final, as in EC2, and the guest that outlived its record is ended; only a node that answers
# before the timeout has its instances adopted. Guests the table has no row for are reported, never ended.


def test_a_node_back_before_the_timeout_has_its_instances_adopted() -> None:
    known = [Known("i-00000001", "running", node="n1", private_ip="10.0.0.5", last_seen=100.0)]
    result = reconcile(known, [status("i-00000001", "running")], now=650.0, node_lost_timeout=LOST_AFTER)
    assert result.seen == ["i-00000001"]
    assert result.lost == [] and result.terminate_again == []


def test_a_lost_instance_whose_node_returns_stays_terminated_and_its_guest_is_ended() -> None:
    known = [Known("i-00000001", "running", node="n1", private_ip="10.0.0.5", last_seen=100.0)]
    first = reconcile(known, [], now=701.0, node_lost_timeout=LOST_AFTER)
    assert first.lost == ["i-00000001"]
    # Ended as lost (records.mark_terminated: its addresses released, its usage closed); then the node returns
    # with the guest still running: no state moves back, and the guest is terminated again.
    mac = "d0:0d:00:00:00:01"
    ended = [Known("i-00000001", "terminated", node="n1", private_ip="10.0.0.5", mac=mac, last_seen=100.0)]
    for state in ("pending", "running"):
        result = reconcile(ended, [status("i-00000001", state)], now=900.0, node_lost_timeout=LOST_AFTER)
        assert result.updates == []
        assert result.terminate_again == ["i-00000001"]
        assert result.lost == [] and result.unknown == []


def test_a_guest_the_table_does_not_know_is_reported_not_ended() -> None:
    """A guest whose row was forgotten (or a CLC restored from an older copy of its store): only logged, so
    restoring a backup never destroys the guests launched after it."""
    result = reconcile([], [status("i-0000000a", "running")], now=900.0, node_lost_timeout=LOST_AFTER)
    assert result.unknown == ["i-0000000a"]
    assert result.terminate_again == []


# -- EBS-backed instances: stopping and stopped (issue 10) -------------------------------------------------


def test_stopping_goes_stopped_once_its_node_reports_it_ended_or_not_at_all() -> None:
    known = [
        Known("i-00000001", "stopping", "n1", "10.0.0.5", "d0:0d:00:00:00:01", 100.0),
        Known("i-00000002", "stopping", "n1", "10.0.0.6", "d0:0d:00:00:00:02", 100.0),
        Known("i-00000003", "stopping", "n1", "10.0.0.7", "d0:0d:00:00:00:03", 100.0),
    ]
    reported = [
        status("i-00000001", "terminated", reason=STOPPED_REASON),
        status("i-00000002", "running"),
    ]
    result = reconcile(known, reported, 110.0, LOST_AFTER)
    stopped = {u.instance_id: u for u in result.updates}
    assert set(stopped) == {"i-00000001", "i-00000003"}
    assert all((u.state, u.node, u.private_ip) == ("stopped", None, None) for u in stopped.values())
    assert result.stop_again == ["i-00000002"]  # still running there: told again
    assert not result.lost and not result.gone and not result.terminate_again


def test_stopped_is_never_lost_and_a_started_one_ignores_the_stopped_runs_report() -> None:
    known = [
        Known("i-00000001", "stopped", None, None, None, 0.0),
        Known("i-00000002", "pending", None, None, None, 100.0),
    ]
    reported = [
        status("i-00000001", "terminated", reason=STOPPED_REASON),
        status("i-00000002", "terminated", reason=STOPPED_REASON),
    ]
    result = reconcile(known, reported, 100.0 + LOST_AFTER / 2, LOST_AFTER)
    assert result.updates == [] and result.lost == []
    result = reconcile(known[:1], [], 10 * LOST_AFTER, LOST_AFTER)
    assert result.updates == [] and result.lost == []
    # Once its new run is reported, it moves on as any instance.
    result = reconcile(known[1:], [status("i-00000002", "running")], 101.0, LOST_AFTER)
    assert [(u.instance_id, u.state) for u in result.updates] == [("i-00000002", "running")]


def test_a_guest_powering_off_stops_an_instance_whose_shutdown_behavior_is_stop() -> None:
    known = [
        Known("i-00000001", "running", "n1", "10.0.0.5", None, 100.0, stop_on_shutdown=True),
        Known("i-00000002", "running", "n1", "10.0.0.6", None, 100.0),
    ]
    reported = [
        status("i-00000001", "terminated", reason=GUEST_POWERED_OFF),
        status("i-00000002", "terminated", reason=GUEST_POWERED_OFF),
    ]
    result = reconcile(known, reported, 101.0, LOST_AFTER)
    assert [(u.instance_id, u.state, u.reason) for u in result.updates] == [
        ("i-00000001", "stopped", "Client.InstanceInitiatedShutdown"),
        ("i-00000002", "terminated", GUEST_POWERED_OFF),
    ]
