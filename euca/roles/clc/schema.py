"""The CLC's tables in the state store (namespace "clc"). Steps are only ever appended."""

from __future__ import annotations

from collections.abc import Callable

from euca.core.store import Tx

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


SCHEMA: list[str | Callable[[Tx], None]] = [
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
]
