"""Walrus metadata in the state store: every SQL statement Walrus runs lives in this package.

Keys are stored as BLOBs of their UTF-8 bytes, so SQLite's memcmp order is S3's UTF-8 binary order, and
listing bounds can use b"\\xff" (a byte UTF-8 never contains) as "after everything with this prefix".
Every object version is one row; `is_latest` marks the current one, and listings of current objects walk a
partial index over (bucket, key) of the live rows.

schema: the tables; rows: the row values and their decoders; buckets: buckets and their configuration
(policies, public access blocks, CORS rules); objects: object versions; listings: objects, versions and
uploads listed; uploads: multipart uploads and their parts; files: which object files rows refer to. Callers use the names re-exported here.
"""

from __future__ import annotations

from euca.roles.walrus.meta.buckets import (
    bucket_versioning,
    delete_bucket,
    insert_bucket,
    load_buckets,
    load_cors,
    load_policies,
    load_settings,
    save_cors,
    save_policy,
    save_setting,
    update_bucket,
)
from euca.roles.walrus.meta.files import referenced_files
from euca.roles.walrus.meta.lifecycle import uploads_begun_before, versions_under
from euca.roles.walrus.meta.listings import RawListing, list_objects, list_uploads, list_versions
from euca.roles.walrus.meta.objects import (
    Deleted,
    delete_object,
    get_inline_data,
    get_object,
    put_object,
    set_object_fields,
    version_from_upload,
)
from euca.roles.walrus.meta.rows import BucketRow, ObjectRow, PartRow, UploadRow, dumps, loads, new_version_id
from euca.roles.walrus.meta.schema import SCHEMA
from euca.roles.walrus.meta.sse_key import claim_cloud_key
from euca.roles.walrus.meta.uploads import create_upload, finish_upload, get_upload, list_parts, put_part

__all__ = [
    "SCHEMA",
    "claim_cloud_key",
    "BucketRow",
    "Deleted",
    "ObjectRow",
    "PartRow",
    "RawListing",
    "UploadRow",
    "bucket_versioning",
    "create_upload",
    "delete_bucket",
    "delete_object",
    "dumps",
    "finish_upload",
    "get_inline_data",
    "get_object",
    "get_upload",
    "insert_bucket",
    "list_objects",
    "list_parts",
    "list_uploads",
    "list_versions",
    "load_buckets",
    "load_cors",
    "load_policies",
    "load_settings",
    "loads",
    "new_version_id",
    "put_object",
    "put_part",
    "referenced_files",
    "save_cors",
    "save_policy",
    "save_setting",
    "set_object_fields",
    "update_bucket",
    "uploads_begun_before",
    "version_from_upload",
    "versions_under",
]
