"""Walrus listings (euca/roles/walrus/meta/listings.py and the listing handlers) against a real SQLite store:
prefix, delimiter, markers, max-keys and truncation, versions, multipart uploads, and encoding-type=url."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree

import pytest

from euca.core.store import Store
from euca.protocol import s3
from euca.roles.walrus import acl as acls
from euca.roles.walrus import listings, meta
from euca.roles.walrus.call import S3Call
from euca.roles.walrus.meta import BucketRow, ObjectRow, UploadRow
from euca.roles.walrus.service import WalrusService
from euca.roles.walrus.storage import Storage

BUCKET = "bkt"
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state.db")
    s.migrate("walrus", meta.SCHEMA)
    s.write_sync(lambda tx: meta.insert_bucket(tx, _bucket(BUCKET)))
    yield s
    s.close()


def _bucket(name: str, versioning: str = "") -> BucketRow:
    return BucketRow(
        name=name,
        owner_id="owner",
        owner_name="owner",
        created=0.0,
        versioning=versioning,
        acl=acls.canned("public-read", "owner", "owner"),
    )


def _put(store: Store, key: str, *, bucket: str = BUCKET, size: int = 1) -> ObjectRow:
    row = ObjectRow(
        key=key,
        version_id="",
        size=size,
        etag="d41d8cd98f00b204e9800998ecf8427e",
        last_modified=1.0,
        storage_id=None,
        owner_id="owner",
        owner_name="owner",
        data=b"x" * size,
    )
    store.write_sync(lambda tx: meta.put_object(tx, bucket, row))
    return row


def _delete(store: Store, key: str, version_id: str | None = None) -> meta.Deleted:
    return store.write_sync(lambda tx: meta.delete_object(tx, BUCKET, key, version_id, "owner", "owner", 2.0))


def _list(store: Store, prefix: str = "", delimiter: str = "", after: str = "", max_keys: int = 1000) -> Any:
    return store.read_sync(lambda tx: meta.list_objects(tx, BUCKET, prefix, delimiter, after, max_keys))


def _keys(listing: meta.RawListing) -> list[str]:
    return [o.key for o in listing.rows]


# -- current objects ---------------------------------------------------------------------------------------


def test_keys_come_in_utf8_byte_order(store: Store) -> None:
    for key in ["b", "a", "é", "Z", "a/b", "~", "\U0001f600"]:
        _put(store, key)
    raw = _list(store)
    assert _keys(raw) == sorted(["b", "a", "é", "Z", "a/b", "~", "\U0001f600"], key=lambda k: k.encode())
    assert not raw.truncated


def test_prefix_limits_the_listing(store: Store) -> None:
    for key in ["photos/a", "photos/b", "photosx", "music/a", "p"]:
        _put(store, key)
    assert _keys(_list(store, prefix="photos/")) == ["photos/a", "photos/b"]
    assert _keys(_list(store, prefix="photos")) == ["photos/a", "photos/b", "photosx"]
    assert _keys(_list(store, prefix="none")) == []


def test_delimiter_rolls_keys_up_into_common_prefixes(store: Store) -> None:
    for key in ["a/1", "a/2", "a/b/3", "b/1", "c", "d/"]:
        _put(store, key)
    raw = _list(store, delimiter="/")
    assert _keys(raw) == ["c"]
    assert raw.prefixes == ["a/", "b/", "d/"]
    raw = _list(store, prefix="a/", delimiter="/")
    assert _keys(raw) == ["a/1", "a/2"]
    assert raw.prefixes == ["a/b/"]


def test_multi_character_delimiter(store: Store) -> None:
    for key in ["x--1", "x--2", "y"]:
        _put(store, key)
    raw = _list(store, delimiter="--")
    assert raw.prefixes == ["x--"]
    assert _keys(raw) == ["y"]


def test_max_keys_truncates_and_the_marker_resumes(store: Store) -> None:
    for key in ["k1", "k2", "k3", "k4", "k5"]:
        _put(store, key)
    first = _list(store, max_keys=2)
    assert _keys(first) == ["k1", "k2"] and first.truncated and first.last == "k2"
    second = _list(store, after=first.last, max_keys=2)
    assert _keys(second) == ["k3", "k4"] and second.truncated
    third = _list(store, after=second.last, max_keys=2)
    assert _keys(third) == ["k5"] and not third.truncated


def test_exactly_max_keys_is_not_truncated(store: Store) -> None:
    for key in ["k1", "k2"]:
        _put(store, key)
    raw = _list(store, max_keys=2)
    assert _keys(raw) == ["k1", "k2"] and not raw.truncated


def test_max_keys_zero_answers_nothing_untruncated(store: Store) -> None:
    _put(store, "k")
    raw = _list(store, max_keys=0)
    assert raw.rows == [] and raw.prefixes == [] and not raw.truncated


def test_common_prefixes_count_toward_max_keys_and_a_marker_inside_one_skips_it(store: Store) -> None:
    for key in ["a/1", "a/2", "b", "c/1", "d"]:
        _put(store, key)
    first = _list(store, delimiter="/", max_keys=2)
    assert first.prefixes == ["a/"] and _keys(first) == ["b"] and first.truncated and first.last == "b"
    second = _list(store, delimiter="/", after="a/1", max_keys=10)
    assert second.prefixes == ["c/"] and _keys(second) == ["b", "d"]


def test_deleted_and_overwritten_keys(store: Store) -> None:
    for key in ["a", "b", "c"]:
        _put(store, key)
    _put(store, "b", size=5)
    _delete(store, "a")
    raw = _list(store)
    assert _keys(raw) == ["b", "c"]
    assert raw.rows[0].size == 5


def test_other_buckets_are_not_listed(store: Store) -> None:
    store.write_sync(lambda tx: meta.insert_bucket(tx, _bucket("other")))
    _put(store, "mine")
    _put(store, "theirs", bucket="other")
    assert _keys(_list(store)) == ["mine"]


# -- versions ---------------------------------------------------------------------------------------------


def _versions(
    store: Store,
    prefix: str = "",
    delimiter: str = "",
    key_marker: str = "",
    version_marker: str = "",
    max_keys: int = 1000,
) -> meta.RawListing:
    return store.read_sync(
        lambda tx: meta.list_versions(tx, BUCKET, prefix, delimiter, key_marker, version_marker, max_keys)
    )


def test_versions_newest_first_with_delete_markers(store: Store) -> None:
    store.write_sync(lambda tx: meta.update_bucket(tx, BUCKET, versioning="Enabled"))
    v1 = _put(store, "k").version_id
    v2 = _put(store, "k").version_id
    marker = _delete(store, "k")
    _put(store, "l")
    raw = _versions(store)
    assert [(o.key, o.version_id) for o in raw.rows][:3] == [("k", marker.version_id), ("k", v2), ("k", v1)]
    assert [o.delete_marker for o in raw.rows] == [True, False, False, False]
    assert [o.is_latest for o in raw.rows] == [True, False, False, True]
    assert _keys(_list(store)) == ["l"]


def test_version_markers_page_through_one_key(store: Store) -> None:
    store.write_sync(lambda tx: meta.update_bucket(tx, BUCKET, versioning="Enabled"))
    ids = [_put(store, "k").version_id for _ in range(3)]
    _put(store, "m")
    first = _versions(store, max_keys=2)
    assert [o.version_id for o in first.rows] == [ids[2], ids[1]]
    assert first.truncated and first.last == "k" and first.last_version == ids[1]
    rest = _versions(store, key_marker="k", version_marker=ids[1])
    assert [(o.key, o.version_id) for o in rest.rows][0] == ("k", ids[0])
    assert [o.key for o in rest.rows] == ["k", "m"] and not rest.truncated


def test_a_deleted_marker_version_resumes_at_the_keys_remaining_versions(store: Store) -> None:
    store.write_sync(lambda tx: meta.update_bucket(tx, BUCKET, versioning="Enabled"))
    ids = [_put(store, "k").version_id for _ in range(2)]
    _delete(store, "k", ids[1])
    rest = _versions(store, key_marker="k", version_marker=ids[1])
    assert [o.version_id for o in rest.rows] == [ids[0]]


def test_key_marker_alone_starts_after_every_version_of_that_key(store: Store) -> None:
    store.write_sync(lambda tx: meta.update_bucket(tx, BUCKET, versioning="Enabled"))
    _put(store, "a")
    _put(store, "a")
    _put(store, "b")
    assert [o.key for o in _versions(store, key_marker="a").rows] == ["b"]


def test_versions_roll_up_at_the_delimiter(store: Store) -> None:
    for key in ["d/1", "d/2", "e"]:
        _put(store, key)
    raw = _versions(store, delimiter="/")
    assert raw.prefixes == ["d/"] and [o.key for o in raw.rows] == ["e"]
    assert [o.version_id for o in raw.rows] == ["null"]


# -- multipart uploads ----------------------------------------------------------------------------------


def _upload(store: Store, key: str, upload_id: str) -> None:
    u = UploadRow(
        upload_id=upload_id,
        bucket=BUCKET,
        key=key,
        initiated=1.0,
        owner_id="owner",
        owner_name="owner",
        headers={},
        acl={},
    )
    store.write_sync(lambda tx: meta.create_upload(tx, u))


def test_uploads_by_key_then_upload_id_with_markers_and_prefixes(store: Store) -> None:
    _upload(store, "a", "2")
    _upload(store, "a", "1")
    _upload(store, "b/x", "3")
    _upload(store, "b/y", "4")
    _upload(store, "c", "5")

    def uploads(**kw: Any) -> tuple[list[tuple[str, str]], list[str], bool]:
        args = {
            "prefix": "",
            "delimiter": "",
            "key_marker": "",
            "upload_id_marker": "",
            "max_uploads": 1000,
        } | kw
        found, prefixes, truncated = store.read_sync(lambda tx: meta.list_uploads(tx, BUCKET, **args))
        return [(u.key, u.upload_id) for u in found], prefixes, truncated

    assert uploads()[0] == [("a", "1"), ("a", "2"), ("b/x", "3"), ("b/y", "4"), ("c", "5")]
    assert uploads(delimiter="/") == ([("a", "1"), ("a", "2"), ("c", "5")], ["b/"], False)
    assert uploads(prefix="b/") == ([("b/x", "3"), ("b/y", "4")], [], False)
    assert uploads(key_marker="a", upload_id_marker="1")[0][0] == ("a", "2")
    assert uploads(key_marker="a")[0][0] == ("b/x", "3")
    assert uploads(max_uploads=2) == ([("a", "1"), ("a", "2")], [], True)


# -- through the handlers: encoding-type and continuation tokens --------------------------------------------


def _service(store: Store, tmp_path: Path) -> WalrusService:
    svc = WalrusService(store, None, Storage(tmp_path / "objects"), "euca-1")  # type: ignore[arg-type]
    svc.buckets = {b.name: b for b in store.read_sync(meta.load_buckets)}
    return svc


def _anonymous(query: str = "") -> S3Call:
    return S3Call(SimpleNamespace(query=query), SimpleNamespace(principal=None), "req")  # type: ignore[arg-type]


def _xml(body: Any) -> ElementTree.Element:
    return ElementTree.fromstring(body)


async def test_encoding_type_url_encodes_keys_prefixes_and_markers(store: Store, tmp_path: Path) -> None:
    for key in ["dir one/a b", "dir one/c", "plain", "ü+&"]:
        _put(store, key)
    svc = _service(store, tmp_path)
    ep = s3.ListObjects(BUCKET, delimiter=" ", marker="a b", encoding_type="url")
    root = _xml((await listings.list_objects(svc, _anonymous(), ep)).body)
    assert [k.text for k in root.iter(f"{NS}Key")] == ["plain", "%C3%BC%2B%26"]
    assert [p.text for p in root.iter(f"{NS}Prefix")][1:] == ["dir%20"]
    assert root.findtext(f"{NS}Marker") == "a%20b"
    assert root.findtext(f"{NS}EncodingType") == "url"

    plain = s3.ListObjects(BUCKET)
    root = _xml((await listings.list_objects(svc, _anonymous(), plain)).body)
    assert [k.text for k in root.iter(f"{NS}Key")] == ["dir one/a b", "dir one/c", "plain", "ü+&"]
    assert root.find(f"{NS}EncodingType") is None


async def test_v2_continuation_token_pages_through_the_keys(store: Store, tmp_path: Path) -> None:
    for key in ["a", "b", "c"]:
        _put(store, key)
    svc = _service(store, tmp_path)
    root = _xml(
        (await listings.list_objects_v2(svc, _anonymous(), s3.ListObjectsV2(BUCKET, max_keys=2))).body
    )
    assert [k.text for k in root.iter(f"{NS}Key")] == ["a", "b"]
    token = root.findtext(f"{NS}NextContinuationToken")
    assert token is not None and base64.urlsafe_b64decode(token).decode() == "b"
    ep = s3.ListObjectsV2(BUCKET, continuation_token=token, max_keys=2)
    root = _xml((await listings.list_objects_v2(svc, _anonymous(), ep)).body)
    assert [k.text for k in root.iter(f"{NS}Key")] == ["c"]
    assert root.findtext(f"{NS}IsTruncated") == "false"


async def test_v2_refuses_a_bad_continuation_token(store: Store, tmp_path: Path) -> None:
    svc = _service(store, tmp_path)
    with pytest.raises(s3.S3Error) as e:
        await listings.list_objects_v2(svc, _anonymous(), s3.ListObjectsV2(BUCKET, continuation_token="__4="))
    assert e.value.code == "InvalidArgument"


async def test_unordered_listing_with_a_delimiter_is_refused(store: Store, tmp_path: Path) -> None:
    svc = _service(store, tmp_path)
    with pytest.raises(s3.S3Error) as e:
        await listings.list_objects(
            svc, _anonymous("allow-unordered=true"), s3.ListObjects(BUCKET, delimiter="/")
        )
    assert e.value.code == "InvalidArgument"
