"""kill -9 in the middle of an upload: the old version survives, nothing new is visible, no debris stays."""

from __future__ import annotations

import time

import pytest

from helpers.walrus_files import object_files, orphan_files
from helpers.walrus_process import PausedUpload, free_port, kill_9, s3_client, start_walrus, stop

MiB = 1024 * 1024


# The old version small (kept inline in the state store, no object file) or large (an object file).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("old", "old_files"), [(b"old version", 0), (b"old version" * 20000, 1)], ids=["inline", "file"]
)
def test_kill_9_mid_upload(tmp_path, old, old_files):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    proc = start_walrus(data_dir, port)
    try:
        s3 = s3_client(data_dir, port)
        s3.create_bucket(Bucket="crash")
        s3.put_object(Bucket="crash", Key="obj", Body=old)
        url = s3.generate_presigned_url("put_object", Params={"Bucket": "crash", "Key": "obj"})
        upload = PausedUpload(url)
        tmp_dir = data_dir / "objects" / "tmp"
        for _ in range(600):  # the server has started writing the new version
            if any(p.stat().st_size > 0 for p in tmp_dir.iterdir()):
                break
            time.sleep(0.05)
        assert list(tmp_dir.iterdir()), "upload never reached the server"
        kill_9(proc)
        upload.finish()
        assert list(tmp_dir.iterdir())  # the debris of the killed upload, until the next start

        proc = start_walrus(data_dir, port)
        s3 = s3_client(data_dir, port)
        assert s3.get_object(Bucket="crash", Key="obj")["Body"].read() == old
        versions = s3.list_object_versions(Bucket="crash").get("Versions", [])
        assert len(versions) == 1
        assert list(tmp_dir.iterdir()) == []
        assert len(object_files(data_dir / "objects")) == old_files
        assert orphan_files(data_dir) == {}
    finally:
        stop(proc)
