"""Every table of the CLC in the state store, and how they are migrated: the one place tables are declared.

The convention:
- Each table is declared here and only here, in the steps of one `Migration`. Its SQL (every SELECT, INSERT,
  UPDATE, DELETE) lives in its resource's records module and only there (the owner is named beside each
  migration below); any other module asks that records module.
- A migration's steps are recorded in the store under its namespace (schema_migrations): steps are only ever
  appended, never edited or reordered, because stores in use have applied the earlier ones. A step is SQL
  (several statements allowed) or a function of a Tx (a seed, a data fix).
- A new resource (security groups, addresses, volumes, snapshots, ...) adds its own Migration with namespace
  "clc.<resource>" to MIGRATIONS, and a package euca/roles/clc/<resource>/ with records.py (its tables'
  SQL and rules) and api.py (its EC2 handlers).
- `migrate(store)` applies them all, in MIGRATIONS order; the CLC role and the admin CLI call it.

The first namespaces are older than this convention and keep their names ("clc", "clc_images",
"cluster_join") because existing stores record them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from euca.core.store import Store, Tx
from euca.roles.clc.instances import records as instances
from euca.roles.clc.security_groups import records as security_groups
from euca.roles.clc.usage import records as usage

Step = str | Callable[[Tx], None]


@dataclass(frozen=True)
class Migration:
    namespace: str
    steps: list[Step]


# Eucalyptus 4.x default instance types: name, cores, memory MiB, disk GiB. Admins may edit the table.
DEFAULT_INSTANCE_TYPES: list[tuple[str, int, int, int]] = [
    ("t1.micro", 1, 256, 5),
    ("m1.small", 1, 256, 5),
    ("m1.medium", 1, 512, 10),
    ("c1.medium", 2, 512, 10),
    ("m1.large", 2, 512, 10),
    ("m1.xlarge", 2, 1024, 10),
    ("m2.xlarge", 2, 2048, 10),
    ("c1.xlarge", 2, 2048, 10),
    ("m3.xlarge", 4, 2048, 15),
    ("m2.2xlarge", 2, 4096, 30),
    ("m3.2xlarge", 4, 4096, 30),
    ("cc1.4xlarge", 8, 3072, 60),
    ("m2.4xlarge", 8, 4096, 60),
    ("hi1.4xlarge", 8, 6144, 120),
    ("cc2.8xlarge", 16, 6144, 120),
    ("cg1.4xlarge", 16, 12288, 200),
    ("cr1.8xlarge", 16, 16384, 240),
    ("hs1.8xlarge", 48, 119808, 24000),
]


def _seed_instance_types(tx: Tx) -> None:
    tx.executemany(
        "INSERT INTO clc_instance_types(name, cpu, memory_mib, disk_gib, position) VALUES(?,?,?,?,?)",
        [(name, cpu, mem, disk, i) for i, (name, cpu, mem, disk) in enumerate(DEFAULT_INSTANCE_TYPES)],
    )


# clc_keypairs: keypairs/records.py; clc_tags: tags/records.py; clc_instance_types: instance_types/records.py;
# clc_images, clc_image_launch_permissions: images/records.py.
CLC = Migration(
    "clc",
    [
        """
    CREATE TABLE clc_keypairs (
        key_pair_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        name TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        key_type TEXT NOT NULL,
        public_key TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE (account_id, name)
    );
    -- Tags belong to the account that set them: an account may tag a public image it does not own,
    -- and only it sees those tags (as in EC2).
    CREATE TABLE clc_tags (
        account_id TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (account_id, resource_id, key)
    );
    CREATE INDEX clc_tags_resource ON clc_tags(resource_id);
    CREATE TABLE clc_instance_types (
        name TEXT PRIMARY KEY,
        cpu INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL,
        disk_gib INTEGER NOT NULL,
        position INTEGER NOT NULL
    );
    CREATE TABLE clc_images (
        image_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        image_type TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        location TEXT,
        architecture TEXT NOT NULL,
        kernel_id TEXT,
        ramdisk_id TEXT,
        platform TEXT,
        root_device_type TEXT NOT NULL,
        root_device_name TEXT,
        virtualization_type TEXT,
        state TEXT NOT NULL,
        public INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE clc_image_launch_permissions (
        image_id TEXT NOT NULL REFERENCES clc_images(image_id) ON DELETE CASCADE,
        account_id TEXT NOT NULL,
        PRIMARY KEY (image_id, account_id)
    );
    """,
        _seed_instance_types,
    ],
)

# clc_image_bundles: images/records.py.
IMAGE_BUNDLES = Migration(
    "clc_images",
    [
        # The manifest an image was registered from, as read and verified at RegisterImage: download
        # manifests are made from it (a manifest replaced in the bucket later changes nothing), and the access
        # key it was read with (the owner's key that presigns part URLs while it stays active).
        """
    CREATE TABLE clc_image_bundles (
        image_id TEXT PRIMARY KEY,
        manifest BLOB NOT NULL,
        access_key_id TEXT
    );
    """,
    ],
)

# clc_clusters, clc_nodes, clc_storage: topology/records.py.
TOPOLOGY = Migration(
    "clc.topology",
    [
        """
    -- One cluster = one availability zone = one CC (Eucalyptus's partition). The poll columns are what the
    -- CLC's poller last heard from the CC.
    CREATE TABLE clc_clusters (
        name TEXT PRIMARY KEY,
        zone TEXT NOT NULL UNIQUE,
        url TEXT NOT NULL,
        registered REAL NOT NULL,
        -- 'admin': registered by `euca admin`; 'local': by a one-box start (its URL follows the local CC)
        origin TEXT NOT NULL DEFAULT 'admin',
        polled REAL,
        last_seen REAL,
        state TEXT NOT NULL DEFAULT 'unknown',
        reason TEXT,
        nodes TEXT NOT NULL DEFAULT '[]',
        capacity TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE clc_nodes (
        name TEXT PRIMARY KEY,
        cluster TEXT NOT NULL REFERENCES clc_clusters(name) ON DELETE CASCADE,
        url TEXT NOT NULL,
        registered REAL NOT NULL,
        origin TEXT NOT NULL DEFAULT 'admin'
    );
    CREATE INDEX clc_nodes_cluster ON clc_nodes(cluster);
    """,
        """
    -- A cluster's storage controller (at most one per cluster, as Eucalyptus's partition had), and what the
    -- CLC's poller last heard from it.
    CREATE TABLE clc_storage (
        cluster TEXT PRIMARY KEY REFERENCES clc_clusters(name) ON DELETE CASCADE,
        url TEXT NOT NULL,
        registered REAL NOT NULL,
        origin TEXT NOT NULL DEFAULT 'admin',
        polled REAL,
        last_seen REAL,
        state TEXT NOT NULL DEFAULT 'unknown',
        reason TEXT,
        backend TEXT NOT NULL DEFAULT '',
        capacity_gb INTEGER NOT NULL DEFAULT 0,
        allocated_gb INTEGER NOT NULL DEFAULT 0
    );
    """,
    ],
)

# clc_reservations, clc_instances: instances/records.py.
INSTANCES = Migration(
    "clc.instances",
    [
        """
    -- One RunInstances request. The client token (per account) makes RunInstances idempotent;
    -- request_digest is what was asked with it, so a different request with the same token is refused.
    CREATE TABLE clc_reservations (
        reservation_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        requester TEXT NOT NULL,
        client_token TEXT,
        request_digest TEXT NOT NULL,
        groups TEXT NOT NULL DEFAULT '[]',
        created REAL NOT NULL
    );
    CREATE UNIQUE INDEX clc_reservations_token ON clc_reservations(account_id, client_token)
        WHERE client_token IS NOT NULL;
    -- seq orders instances by launch (DescribeInstances pages by it).
    -- cluster is NULL only for an instance that never reached a CC.
    -- last_seen: when a CC last reported it (or its launch); terminated_at: when it became terminated.
    CREATE TABLE clc_instances (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL UNIQUE,
        reservation_id TEXT NOT NULL REFERENCES clc_reservations(reservation_id),
        account_id TEXT NOT NULL,
        launch_index INTEGER NOT NULL,
        image_id TEXT NOT NULL,
        kernel_id TEXT,
        ramdisk_id TEXT,
        instance_type TEXT NOT NULL,
        key_name TEXT,
        user_data BLOB NOT NULL DEFAULT x'',
        architecture TEXT,
        zone TEXT NOT NULL,
        cluster TEXT,
        node TEXT,
        private_ip TEXT,
        mac TEXT,
        state TEXT NOT NULL,
        reason TEXT,
        state_reason_code TEXT,
        state_reason_message TEXT,
        launch_time REAL NOT NULL,
        last_seen REAL NOT NULL,
        terminated_at REAL
    );
    CREATE INDEX clc_instances_account ON clc_instances(account_id);
    CREATE INDEX clc_instances_cluster ON clc_instances(cluster, state);
    CREATE INDEX clc_instances_terminated ON clc_instances(terminated_at) WHERE terminated_at IS NOT NULL;
    """,
        # The groups of a reservation by id (security groups are a resource now); `groups` keeps their names,
        # as launched, for answers about instances whose group was deleted since.
        "ALTER TABLE clc_reservations ADD COLUMN group_ids TEXT NOT NULL DEFAULT '[]'",
        lambda tx: _migrate_reservation_groups(tx),
    ],
)


def _migrate_reservation_groups(tx: Tx) -> None:
    """Reservations recorded before groups were a resource named groups only: each name becomes the id of
    the account's group of that name (made if missing; SECURITY_GROUPS runs before INSTANCES)."""
    for reservation_id, account_id, names in instances.reservations_without_group_ids(tx):
        ids = security_groups.ids_for_names(tx, account_id, names)
        instances.set_reservation_group_ids(tx, reservation_id, ids)


# clc_security_groups, clc_security_group_rules: security_groups/records.py.
SECURITY_GROUPS = Migration(
    "clc.security_groups",
    [
        """
    -- EC2-Classic security groups: one account's, named uniquely in it.
    CREATE TABLE clc_security_groups (
        group_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        created REAL NOT NULL,
        UNIQUE (account_id, name)
    );
    -- Ingress rules: a protocol (tcp, udp, icmp, -1), a port range (ICMP: type and code; -1: -1/-1), and one
    -- source: a CIDR or a group (of any account); '' where there is none. seq keeps the order of addition.
    CREATE TABLE clc_security_group_rules (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        rule_id TEXT NOT NULL UNIQUE,
        group_id TEXT NOT NULL REFERENCES clc_security_groups(group_id) ON DELETE CASCADE,
        protocol TEXT NOT NULL,
        from_port INTEGER NOT NULL,
        to_port INTEGER NOT NULL,
        cidr TEXT NOT NULL DEFAULT '',
        source_group_id TEXT NOT NULL DEFAULT '',
        description TEXT,
        UNIQUE (group_id, protocol, from_port, to_port, cidr, source_group_id)
    );
    CREATE INDEX clc_security_group_rules_group ON clc_security_group_rules(group_id);
    CREATE INDEX clc_security_group_rules_source ON clc_security_group_rules(source_group_id)
        WHERE source_group_id != '';
    """,
    ],
)

# cluster_join_tokens: join.py (the join endpoint and the admin CLI's tokens).
JOIN_TOKENS = Migration(
    "cluster_join",
    [
        """
    CREATE TABLE cluster_join_tokens (
        token_id TEXT PRIMARY KEY,
        secret_sha256 TEXT NOT NULL,
        role TEXT NOT NULL,
        name TEXT NOT NULL,
        hosts TEXT NOT NULL DEFAULT '[]',
        created REAL NOT NULL,
        expires REAL NOT NULL,
        used REAL,
        used_by TEXT,
        cert_sha256 TEXT
    );
    CREATE INDEX cluster_join_tokens_name ON cluster_join_tokens(role, name);
    """,
        # An NC's token names its cluster, which the certificate it gets attests (rows made before: NULL,
        # redeemed as before into a certificate without a cluster).
        "ALTER TABLE cluster_join_tokens ADD COLUMN cluster TEXT",
    ],
)

# clc_addresses: addresses/records.py.
ADDRESSES = Migration(
    "clc.addresses",
    [
        """
    -- The public address pool, one row per address. Free: account_id NULL. An elastic IP: account_id and
    -- allocation_id (auto 0), associated with one of its instances or not. A system-assigned address of an
    -- instance: auto 1, account_id its owner. ip_order sorts by address.
    CREATE TABLE clc_addresses (
        public_ip TEXT PRIMARY KEY,
        ip_order INTEGER NOT NULL,
        account_id TEXT,
        allocation_id TEXT UNIQUE,
        domain TEXT NOT NULL DEFAULT 'standard',
        instance_id TEXT UNIQUE,
        association_id TEXT UNIQUE,
        auto INTEGER NOT NULL DEFAULT 0,
        allocated REAL
    );
    CREATE INDEX clc_addresses_account ON clc_addresses(account_id);
    CREATE INDEX clc_addresses_order ON clc_addresses(ip_order);
    """,
        # The free addresses in address order, so taking the next free one reads one index entry: with
        # only the indexes above SQLite finds every free row by account_id IS NULL and sorts them (a /16 pool
        # made RunInstances of 100 take a second).
        "CREATE INDEX clc_addresses_free ON clc_addresses(ip_order) WHERE account_id IS NULL",
    ],
)

# clc_volumes: volumes/records.py.
VOLUMES = Migration(
    "clc.volumes",
    [
        """
    -- EBS volumes as the EC2 API shows them. The bytes are on the zone's SC, which the CLC asks (cluster
    -- messages); state creating/deleting is the CLC's intent until the SC confirmed it (the poller resends).
    CREATE TABLE clc_volumes (
        volume_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        zone TEXT NOT NULL,
        cluster TEXT NOT NULL,
        size_gib INTEGER NOT NULL,
        volume_type TEXT NOT NULL,
        iops INTEGER,
        snapshot_id TEXT,
        state TEXT NOT NULL,
        reason TEXT,
        created REAL NOT NULL,
        client_token TEXT,
        request_digest TEXT,
        -- The latest ModifyVolume (NULL: never modified): modifying until the SC grew it, then completed
        -- (or failed); the target is applied to size_gib/volume_type/iops when it completes.
        mod_state TEXT,
        mod_message TEXT,
        mod_original_size INTEGER,
        mod_target_size INTEGER,
        mod_original_type TEXT,
        mod_target_type TEXT,
        mod_original_iops INTEGER,
        mod_target_iops INTEGER,
        mod_start REAL,
        mod_end REAL
    );
    CREATE INDEX clc_volumes_account ON clc_volumes(account_id);
    CREATE INDEX clc_volumes_cluster ON clc_volumes(cluster);
    CREATE UNIQUE INDEX clc_volumes_token ON clc_volumes(account_id, client_token)
        WHERE client_token IS NOT NULL;
    """,
    ],
)

# clc_volume_attachments: volumes/records.py.
VOLUME_ATTACHMENTS = Migration(
    "clc.volume_attachments",
    [
        """
    -- A volume attached to an instance (one at most per volume): attaching from AttachVolume until the
    -- instance's node reports the disk, attached, detaching from DetachVolume (or the instance's end) until
    -- the node no longer has it and the SC dropped the export; then the row goes and the volume is available.
    CREATE TABLE clc_volume_attachments (
        volume_id TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        cluster TEXT NOT NULL,
        device TEXT NOT NULL,
        state TEXT NOT NULL,
        attach_time REAL NOT NULL,
        delete_on_termination INTEGER NOT NULL DEFAULT 0,
        force INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX clc_volume_attachments_instance ON clc_volume_attachments(instance_id);
    """,
    ],
)

# clc_instances' attribute columns (DescribeInstanceAttribute / ModifyInstanceAttribute): instances/records.py.
INSTANCE_ATTRIBUTES = Migration(
    "clc.instance_attributes",
    [
        # Termination protection (TerminateInstances refuses it: OperationNotPermitted) and what a shutdown
        # from inside the guest does: an instance-store instance terminates (Eucalyptus: the NC ends it).
        "ALTER TABLE clc_instances ADD COLUMN disable_api_termination INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE clc_instances ADD COLUMN shutdown_behavior TEXT NOT NULL DEFAULT 'terminate'",
    ],
)


def _seed_usage_log(tx: Tx) -> None:
    """A cloud older than the usage log: what already costs is logged as of now (a volume made before the
    upgrade is counted from the upgrade on, instead of never)."""
    now = usage.clock()
    user = "CASE WHEN instr(r.requester, ':user/') > 0 THEN substr(r.requester, instr(r.requester, ':user/') + 6) ELSE 'root' END"
    tx.execute(
        "INSERT INTO clc_usage_events(at, kind, resource_id, event, account_id, user, zone, detail) "
        f"SELECT ?, 'instance', i.instance_id, i.state, i.account_id, {user}, i.zone, i.instance_type "
        "FROM clc_instances i JOIN clc_reservations r ON r.reservation_id = i.reservation_id "
        "WHERE i.state != 'terminated' ORDER BY i.seq",
        (now,),
    )
    tx.execute(
        "INSERT INTO clc_usage_events(at, kind, resource_id, event, account_id, zone, size_gib) "
        "SELECT ?, 'volume', volume_id, 'created', account_id, zone, size_gib FROM clc_volumes "
        "WHERE state != 'deleting' ORDER BY volume_id",
        (now,),
    )
    for event, where in (("allocated", ""), ("associated", " AND instance_id IS NOT NULL")):
        tx.execute(
            "INSERT INTO clc_usage_events(at, kind, resource_id, event, account_id, detail) "
            f"SELECT ?, 'elastic-ip', public_ip, '{event}', account_id, "
            f"{'instance_id' if event == 'associated' else 'NULL'} FROM clc_addresses "
            f"WHERE account_id IS NOT NULL AND auto = 0{where} ORDER BY ip_order",
            (now,),
        )


# clc_usage_events: usage/records.py.
USAGE = Migration(
    "clc.usage",
    [
        """
    -- The usage log: one row per event that costs something, written in the transaction of the state change
    -- it reports; only ever appended to. Reports (usage/report.py) make intervals of it.
    CREATE TABLE clc_usage_events (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        event TEXT NOT NULL,
        account_id TEXT NOT NULL,
        user TEXT,
        zone TEXT,
        detail TEXT,
        size_gib INTEGER
    );
    CREATE INDEX clc_usage_events_resource ON clc_usage_events(resource_id, seq);
    CREATE INDEX clc_usage_events_kind ON clc_usage_events(kind, at);
    CREATE INDEX clc_usage_events_detail ON clc_usage_events(detail) WHERE kind = 'elastic-ip';
    """,
        _seed_usage_log,
    ],
)

# clc_snapshots, clc_snapshot_permissions: snapshots/records.py.
SNAPSHOTS = Migration(
    "clc.snapshots",
    [
        """
    -- EBS snapshots as the EC2 API shows them. The chunks and the manifest are in Walrus (the system
    -- account's bucket); `cluster` is the zone whose SC writes it (and which the poller asks while pending).
    -- state: pending | completed | error, and deleted (gone for users; kept until the sweep removed its
    -- manifest, then forgotten).
    CREATE TABLE clc_snapshots (
        snapshot_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        volume_id TEXT NOT NULL,
        volume_size INTEGER NOT NULL,
        cluster TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        reason TEXT,
        parent TEXT,
        copied_from TEXT,
        chunks_done INTEGER NOT NULL DEFAULT 0,
        chunks_total INTEGER NOT NULL DEFAULT 0,
        bytes_uploaded INTEGER NOT NULL DEFAULT 0,
        public INTEGER NOT NULL DEFAULT 0,
        started REAL NOT NULL,
        ended REAL
    );
    CREATE INDEX clc_snapshots_account ON clc_snapshots(account_id);
    CREATE INDEX clc_snapshots_volume ON clc_snapshots(volume_id);
    -- createVolumePermission: the accounts a snapshot is shared with (group all: clc_snapshots.public).
    CREATE TABLE clc_snapshot_permissions (
        snapshot_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        PRIMARY KEY (snapshot_id, account_id)
    );
    """,
    ],
)

# SECURITY_GROUPS before INSTANCES: an instances step maps old reservations' group names to group ids.
# clc_clusters.subnet: topology/records.py (issue 9: each cluster's private subnet, set by the admin).
CLUSTER_SUBNETS = Migration(
    "clc.cluster_subnets",
    [
        # NULL: the CC serves the subnet of its own configuration (cc.subnet).
        "ALTER TABLE clc_clusters ADD COLUMN subnet TEXT",
    ],
)


INSTANCE_PROFILES = Migration(
    "clc.instance_profiles",
    [
        """
    -- The instance profile an instance was launched with (RunInstances IamInstanceProfile; issue 12), and
    -- the STS session of its role the metadata service serves now (the key's secret and token are in
    -- sts_sessions); replaced before it expires (instances/profiles.py).
    CREATE TABLE clc_instance_profiles (
        instance_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        profile_arn TEXT NOT NULL,
        profile_id TEXT NOT NULL,
        association_id TEXT NOT NULL,
        access_key_id TEXT,
        issued REAL,
        expires REAL
    );
    CREATE INDEX clc_instance_profiles_expires ON clc_instance_profiles(expires);
    """,
    ],
)


MIGRATIONS: tuple[Migration, ...] = (
    CLC,
    IMAGE_BUNDLES,
    TOPOLOGY,
    SECURITY_GROUPS,
    INSTANCES,
    JOIN_TOKENS,
    ADDRESSES,
    VOLUMES,
    CLUSTER_SUBNETS,
    VOLUME_ATTACHMENTS,
    INSTANCE_ATTRIBUTES,
    USAGE,
    SNAPSHOTS,
    INSTANCE_PROFILES,
)


def apply(store: Store, migration: Migration) -> None:
    store.migrate(migration.namespace, migration.steps)


def migrate(store: Store) -> None:
    """Every CLC table, created or brought up to date (cheap when nothing is left to apply)."""
    for migration in MIGRATIONS:
        apply(store, migration)
