"""The security group tables (clc_security_groups, clc_security_group_rules) and the group rules: the only
module that reads or writes them.

EC2-Classic semantics, as Eucalyptus answered them: a group belongs to one account and is named uniquely in
it; every account has a `default` group, made on first use, whose rules admit ICMP, TCP and UDP from its own
members; a rule admits one protocol and port range from one source, a CIDR range or a group (of any account,
named by id, or by name and owner). Rules are ingress only (egress is VPC's). A group another group's rule
refers to cannot be deleted (InvalidGroup.InUse, naming those groups); whether instances still use a group
is the instances' to say (the API asks them).
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from euca.core.store import Tx
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.ids import unused_id
from euca.roles.clc.security_groups.rules import SourceGroup, Wanted, full_access
from euca.roles.clc.tags import records as tags

DEFAULT_GROUP = "default"
DEFAULT_DESCRIPTION = "default group"
MAX_NAME_LENGTH = 255
GROUP_ID_RE = re.compile(r"^sg-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
RULE_ID_RE = re.compile(r"^sgr-[0-9a-f]{17}$")
# SQLite's bound-parameter limit, with room for the other parameters of a statement.
CHUNK = 500


@dataclass(frozen=True)
class RuleRecord:
    rule_id: str
    group_id: str
    protocol: str  # tcp, udp, icmp, -1
    from_port: int | None  # None for -1
    to_port: int | None
    cidr: str | None
    source_group_id: str | None
    source_group_name: str | None
    source_owner_id: str | None
    description: str | None

    @property
    def key(self) -> tuple[str, int | None, int | None, str, str]:
        """What makes two rules of a group the same rule (the description does not)."""
        return (self.protocol, self.from_port, self.to_port, self.cidr or "", self.source_group_id or "")


@dataclass(frozen=True)
class GroupRecord:
    group_id: str
    account_id: str
    name: str
    description: str
    created: float
    rules: list[RuleRecord] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolved:
    """A wanted rule with its source group found (the group id, name and owner)."""

    protocol: str
    from_port: int | None
    to_port: int | None
    cidr: str | None
    source: GroupRecord | None
    description: str | None

    @property
    def key(self) -> tuple[str, int | None, int | None, str, str]:
        return (
            self.protocol,
            self.from_port,
            self.to_port,
            self.cidr or "",
            self.source.group_id if self.source else "",
        )


def new_rule_id() -> str:
    return "sgr-" + secrets.token_hex(9)[:17]


def check_group_ids(ids: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(ids))
    for group_id in out:
        if not GROUP_ID_RE.match(group_id):
            raise Ec2Error("InvalidGroupId.Malformed", f'Invalid id: "{group_id}" (expecting "sg-...")')
    return out


def check_group_name(name: str, what: str = "groupName") -> None:
    if not name or len(name) > MAX_NAME_LENGTH or not name.isascii() or not name.isprintable():
        raise Ec2Error(
            "InvalidParameterValue",
            f"Value ({name}) for parameter {what} is invalid: 1 to {MAX_NAME_LENGTH} printable ASCII characters.",
        )


def not_found(what: str) -> Ec2Error:
    return Ec2Error("InvalidGroup.NotFound", f"The security group '{what}' does not exist")


# -- groups ----------------------------------------------------------------------------------------------


def _group(row: sqlite3.Row) -> GroupRecord:
    return GroupRecord(row["group_id"], row["account_id"], row["name"], row["description"], row["created"])


def _insert_group(tx: Tx, account_id: str, name: str, description: str) -> str:
    group_id = unused_id(
        "sg", lambda new: tx.one("SELECT 1 FROM clc_security_groups WHERE group_id=?", (new,)) is not None
    )
    tx.execute(
        "INSERT INTO clc_security_groups(group_id, account_id, name, description, created) VALUES(?,?,?,?,?)",
        (group_id, account_id, name, description, time.time()),
    )
    return group_id


def has_default(tx: Tx, account_id: str) -> bool:
    return bool(
        tx.one("SELECT 1 FROM clc_security_groups WHERE account_id=? AND name=?", (account_id, DEFAULT_GROUP))
    )


def ensure_default(tx: Tx, account_id: str) -> str:
    """The account's default group, made now if it is the account's first use: its id."""
    row = tx.one(
        "SELECT group_id FROM clc_security_groups WHERE account_id=? AND name=?", (account_id, DEFAULT_GROUP)
    )
    if row is not None:
        return str(row["group_id"])
    group_id = _insert_group(tx, account_id, DEFAULT_GROUP, DEFAULT_DESCRIPTION)
    default = GroupRecord(group_id, account_id, DEFAULT_GROUP, DEFAULT_DESCRIPTION, time.time())
    for w in full_access(SourceGroup(group_id=group_id)):
        _insert_rule(tx, group_id, Resolved(w.protocol, w.from_port, w.to_port, None, default, None))
    return group_id


def create_group(
    tx: Tx, account_id: str, name: str, description: str, tag_pairs: list[tuple[str, str]]
) -> str:
    """A new group of the account with its tags; its id."""
    ensure_default(tx, account_id)
    if name == DEFAULT_GROUP:
        raise Ec2Error(
            "InvalidGroup.Reserved",
            "The security group 'default' is reserved: it cannot be created, and the default group cannot "
            "be deleted, but its rules can be changed.",
        )
    if tx.one("SELECT 1 FROM clc_security_groups WHERE account_id=? AND name=?", (account_id, name)):
        raise Ec2Error("InvalidGroup.Duplicate", f"The security group '{name}' already exists")
    group_id = _insert_group(tx, account_id, name, description)
    tags.write_tags(tx, account_id, group_id, "security-group", tag_pairs)
    return group_id


def find_group(tx: Tx, account_id: str, *, group_id: str | None, group_name: str | None) -> GroupRecord:
    """The caller's group named by id or by name (the default group is made on first use)."""
    if group_id:
        check_group_ids([group_id])
        row = tx.one(
            "SELECT * FROM clc_security_groups WHERE group_id=? AND account_id=?", (group_id, account_id)
        )
        if row is None:
            raise not_found(group_id)
        return _group(row)
    if not group_name:
        raise Ec2Error("MissingParameter", "The request must contain the parameter groupName or groupId")
    if group_name == DEFAULT_GROUP:
        ensure_default(tx, account_id)
    row = tx.one("SELECT * FROM clc_security_groups WHERE name=? AND account_id=?", (group_name, account_id))
    if row is None:
        raise not_found(group_name)
    return _group(row)


def groups_for_launch(tx: Tx, account_id: str, names: Sequence[str], ids: Sequence[str]) -> list[GroupRecord]:
    """The groups a RunInstances names (by name or id; none: the default group), in the order named."""
    found: list[GroupRecord] = []
    for name in names:
        found.append(find_group(tx, account_id, group_id=None, group_name=name))
    for group_id in ids:
        found.append(find_group(tx, account_id, group_id=group_id, group_name=None))
    if not found:
        found.append(find_group(tx, account_id, group_id=None, group_name=DEFAULT_GROUP))
    unique = {g.group_id: g for g in found}
    return list(unique.values())


def load_groups(tx: Tx, account_id: str | None, *, with_tags: bool = True) -> list[GroupRecord]:
    """The account's groups (every account's for None) by name, with their rules and the owner's tags."""
    if account_id is None:
        rows = tx.all("SELECT * FROM clc_security_groups ORDER BY account_id, name")
    else:
        rows = tx.all("SELECT * FROM clc_security_groups WHERE account_id=? ORDER BY name", (account_id,))
    ids = [r["group_id"] for r in rows]
    rules = _rules_of(tx, ids)
    tagged: dict[str, dict[str, str]] = {}
    if with_tags:
        for owner in {r["account_id"] for r in rows}:
            tagged.update(tags.tags_of(tx, owner, (r["group_id"] for r in rows if r["account_id"] == owner)))
    return [
        GroupRecord(
            r["group_id"],
            r["account_id"],
            r["name"],
            r["description"],
            r["created"],
            rules.get(r["group_id"], []),
            tagged.get(r["group_id"], {}),
        )
        for r in rows
    ]


def _rules_of(tx: Tx, group_ids: Sequence[str]) -> dict[str, list[RuleRecord]]:
    found: dict[str, list[RuleRecord]] = {}
    for start in range(0, len(group_ids), CHUNK):
        chunk = list(group_ids[start : start + CHUNK])
        marks = ",".join("?" * len(chunk))
        for r in tx.all(
            "SELECT r.rule_id, r.group_id, r.protocol, r.from_port, r.to_port, r.cidr, r.source_group_id, "
            "r.description, s.name AS source_name, s.account_id AS source_owner "
            "FROM clc_security_group_rules r LEFT JOIN clc_security_groups s ON s.group_id = r.source_group_id "
            f"WHERE r.group_id IN ({marks}) ORDER BY r.seq",
            chunk,
        ):
            found.setdefault(r["group_id"], []).append(
                RuleRecord(
                    rule_id=r["rule_id"],
                    group_id=r["group_id"],
                    protocol=r["protocol"],
                    from_port=None if r["protocol"] == "-1" else r["from_port"],
                    to_port=None if r["protocol"] == "-1" else r["to_port"],
                    cidr=r["cidr"] or None,
                    source_group_id=r["source_group_id"] or None,
                    source_group_name=r["source_name"],
                    source_owner_id=r["source_owner"],
                    description=r["description"],
                )
            )
    return found


def rules_of_group(tx: Tx, group_id: str) -> list[RuleRecord]:
    return _rules_of(tx, [group_id]).get(group_id, [])


def rules_of_groups(tx: Tx, group_ids: Sequence[str]) -> dict[str, list[RuleRecord]]:
    """group id -> its rules, for these groups (what the clusters' network views carry)."""
    return _rules_of(tx, list(group_ids))


def group_visible(tx: Tx, group_id: str, account_id: str) -> bool:
    return bool(
        tx.one("SELECT 1 FROM clc_security_groups WHERE group_id=? AND account_id=?", (group_id, account_id))
    )


TAG_KIND = tags.ResourceKind(("sg",), "security-group", "InvalidGroup.NotFound", group_visible)


def delete_group(tx: Tx, group: GroupRecord) -> None:
    """Delete the group, its rules and tags. The default group stays; a group other groups' rules name is
    in use."""
    if group.name == DEFAULT_GROUP:
        raise Ec2Error(
            "InvalidGroup.Reserved",
            "The default security group cannot be deleted, but its rules can be changed.",
        )
    users = tx.all(
        "SELECT DISTINCT g.account_id, g.name FROM clc_security_group_rules r "
        "JOIN clc_security_groups g ON g.group_id = r.group_id "
        "WHERE r.source_group_id=? AND r.group_id!=? ORDER BY g.account_id, g.name",
        (group.group_id, group.group_id),
    )
    if users:
        names = ", ".join(f"{u['account_id']}:{u['name']}" for u in users)
        raise Ec2Error(
            "InvalidGroup.InUse", f"Group {group.account_id}:{group.name} is used by groups: {names}"
        )
    tx.execute("DELETE FROM clc_security_group_rules WHERE group_id=?", (group.group_id,))
    tx.execute("DELETE FROM clc_security_groups WHERE group_id=?", (group.group_id,))
    tags.forget_resource(tx, group.group_id)


def named_by_other_accounts(tx: Tx, account_id: str) -> list[str]:
    """Other accounts' groups ("account:name") whose rules name one of this account's groups as a source."""
    rows = tx.all(
        "SELECT DISTINCT g.account_id, g.name FROM clc_security_group_rules r "
        "JOIN clc_security_groups g ON g.group_id = r.group_id "
        "JOIN clc_security_groups s ON s.group_id = r.source_group_id "
        "WHERE s.account_id=? AND g.account_id!=? ORDER BY g.account_id, g.name",
        (account_id, account_id),
    )
    return [f"{r['account_id']}:{r['name']}" for r in rows]


def forget_account_groups(tx: Tx, account_id: str) -> None:
    """For DeleteAccount: every group of the account, its default one included, with their rules and tags.
    The caller has checked that no instance and no other account's rule uses them."""
    for group in load_groups(tx, account_id, with_tags=False):
        tx.execute("DELETE FROM clc_security_group_rules WHERE group_id=?", (group.group_id,))
        tx.execute("DELETE FROM clc_security_groups WHERE group_id=?", (group.group_id,))
        tags.forget_resource(tx, group.group_id)


# -- rules -----------------------------------------------------------------------------------------------


def resolve_source(tx: Tx, account_id: str, source: SourceGroup) -> GroupRecord:
    """The group a rule names as its source: by id (any account's), or by name in the owner's account (the
    caller's when no owner is given)."""
    if source.group_id:
        check_group_ids([source.group_id])
        row = tx.one("SELECT * FROM clc_security_groups WHERE group_id=?", (source.group_id,))
        if row is None or (source.owner_id and row["account_id"] != source.owner_id):
            raise not_found(source.group_id)
        return _group(row)
    owner = source.owner_id or account_id
    name = source.group_name or ""
    if name == DEFAULT_GROUP and owner == account_id:
        ensure_default(tx, account_id)
    row = tx.one("SELECT * FROM clc_security_groups WHERE account_id=? AND name=?", (owner, name))
    if row is None:
        raise not_found(name if owner == account_id else f"{owner}:{name}")
    return _group(row)


def resolve(tx: Tx, account_id: str, wanted: Iterable[Wanted]) -> list[Resolved]:
    return [
        Resolved(
            w.protocol,
            w.from_port,
            w.to_port,
            w.cidr,
            resolve_source(tx, account_id, w.group) if w.group else None,
            w.description,
        )
        for w in wanted
    ]


def _insert_rule(tx: Tx, group_id: str, r: Resolved) -> str:
    rule_id = new_rule_id()
    tx.execute(
        "INSERT INTO clc_security_group_rules(rule_id, group_id, protocol, from_port, to_port, cidr, "
        "source_group_id, description) VALUES(?,?,?,?,?,?,?,?)",
        (
            rule_id,
            group_id,
            r.protocol,
            -1 if r.from_port is None else r.from_port,
            -1 if r.to_port is None else r.to_port,
            r.cidr or "",
            r.source.group_id if r.source else "",
            r.description,
        ),
    )
    return rule_id


def add_rules(tx: Tx, group: GroupRecord, wanted: Sequence[Resolved]) -> list[RuleRecord]:
    """Add the rules to the group, all or none: one the group has already is InvalidPermission.Duplicate."""
    have = {r.key for r in rules_of_group(tx, group.group_id)}
    seen: set[tuple[str, int | None, int | None, str, str]] = set()
    for w in wanted:
        if w.key in have or w.key in seen:
            raise Ec2Error(
                "InvalidPermission.Duplicate",
                f'the specified rule "peer: {_peer(w)}, {w.protocol.upper()}, {_ports(w)}, ALLOW" '
                "already exists",
            )
        seen.add(w.key)
    added = {_insert_rule(tx, group.group_id, w) for w in wanted}
    return [r for r in rules_of_group(tx, group.group_id) if r.rule_id in added]


def remove_rules(tx: Tx, group: GroupRecord, wanted: Sequence[Resolved]) -> list[RuleRecord]:
    """Remove the rules from the group, all or none: one it does not have is InvalidPermission.NotFound."""
    have = {r.key: r for r in rules_of_group(tx, group.group_id)}
    gone: list[RuleRecord] = []
    for w in wanted:
        rule = have.get(w.key)
        if rule is None:
            raise Ec2Error(
                "InvalidPermission.NotFound", "The specified rule does not exist in this security group."
            )
        gone.append(rule)
    _delete_rules(tx, [r.rule_id for r in gone])
    return gone


def remove_rules_by_id(tx: Tx, group: GroupRecord, rule_ids: Sequence[str]) -> list[RuleRecord]:
    have = {r.rule_id: r for r in rules_of_group(tx, group.group_id)}
    for rule_id in rule_ids:
        if rule_id not in have:
            raise Ec2Error(
                "InvalidSecurityGroupRuleId.NotFound",
                f"The security group rule ID '{rule_id}' does not exist in group {group.group_id}",
            )
    _delete_rules(tx, list(rule_ids))
    return [have[i] for i in dict.fromkeys(rule_ids)]


def _delete_rules(tx: Tx, rule_ids: list[str]) -> None:
    for start in range(0, len(rule_ids), CHUNK):
        chunk = rule_ids[start : start + CHUNK]
        tx.execute(
            f"DELETE FROM clc_security_group_rules WHERE rule_id IN ({','.join('?' * len(chunk))})", chunk
        )


def load_rules(tx: Tx, account_id: str) -> list[RuleRecord]:
    """Every rule of the account's groups (DescribeSecurityGroupRules)."""
    ids = [
        r["group_id"]
        for r in tx.all("SELECT group_id FROM clc_security_groups WHERE account_id=?", (account_id,))
    ]
    return [rule for rules in _rules_of(tx, ids).values() for rule in rules]


def _peer(w: Resolved) -> str:
    if w.source is not None:
        return f"{w.source.account_id}:{w.source.name}"
    return w.cidr or ""


def _ports(w: Resolved) -> str:
    if w.protocol == "-1":
        return "ALL"
    if w.protocol == "icmp":
        return f"type {w.from_port}, code {w.to_port}"
    return f"{w.from_port}-{w.to_port}"


# -- the migration of instance records from names to ids -------------------------------------------------


def ids_for_names(tx: Tx, account_id: str, names: Sequence[str]) -> list[str]:
    """The ids of the account's groups of these names, each made if missing (instances launched before
    groups were kept named groups that did not exist: they become groups, without rules)."""
    out: list[str] = []
    for name in names:
        if name == DEFAULT_GROUP:
            out.append(ensure_default(tx, account_id))
            continue
        row = tx.one(
            "SELECT group_id FROM clc_security_groups WHERE account_id=? AND name=?", (account_id, name)
        )
        out.append(str(row["group_id"]) if row else _insert_group(tx, account_id, name, name))
    return out
