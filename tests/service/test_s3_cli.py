"""The real aws CLI (v1) against Walrus: s3 cp/sync/ls/rm, s3api, a 100 MiB multipart upload."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

MiB = 1024 * 1024


def test_mb_cp_ls_rm_rb(aws_cli, bucket_name, tmp_path):
    aws_cli("s3", "mb", f"s3://{bucket_name}")
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello from the cli\n")
    aws_cli("s3", "cp", str(src), f"s3://{bucket_name}/dir/hello.txt")
    out = aws_cli("s3", "ls", f"s3://{bucket_name}/dir/").stdout
    assert "hello.txt" in out
    dst = tmp_path / "back.txt"
    aws_cli("s3", "cp", f"s3://{bucket_name}/dir/hello.txt", str(dst))
    assert dst.read_bytes() == src.read_bytes()
    aws_cli("s3", "rm", f"s3://{bucket_name}/dir/hello.txt")
    assert "hello.txt" not in aws_cli("s3", "ls", f"s3://{bucket_name}/dir/", check=False).stdout
    aws_cli("s3", "rb", f"s3://{bucket_name}")
    assert bucket_name not in aws_cli("s3", "ls").stdout


def test_sync_both_ways(aws_cli, bucket, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(1000 + i))
    (src / "sub" / "deep").write_bytes(b"deep")
    aws_cli("s3", "sync", str(src), f"s3://{bucket}/tree")
    dst = tmp_path / "dst"
    aws_cli("s3", "sync", f"s3://{bucket}/tree", str(dst))
    for p in src.rglob("*"):
        if p.is_file():
            assert (dst / p.relative_to(src)).read_bytes() == p.read_bytes()
    # A second sync has nothing to do.
    assert aws_cli("s3", "sync", str(src), f"s3://{bucket}/tree").stdout.strip() == ""
    aws_cli("s3", "rm", "--recursive", f"s3://{bucket}/tree")
    assert aws_cli("s3", "ls", "--recursive", f"s3://{bucket}", check=False).stdout.strip() == ""


def test_s3api(aws_cli, bucket, tmp_path):
    body = tmp_path / "b"
    body.write_bytes(b"s3api body")
    out = json.loads(
        aws_cli(
            "s3api", "put-object", "--bucket", bucket, "--key", "k", "--body", str(body), "--metadata", "a=b"
        ).stdout
    )
    assert out["ETag"] == f'"{hashlib.md5(b"s3api body").hexdigest()}"'
    head = json.loads(aws_cli("s3api", "head-object", "--bucket", bucket, "--key", "k").stdout)
    assert head["Metadata"] == {"a": "b"} and head["ContentLength"] == 10
    listed = json.loads(aws_cli("s3api", "list-objects-v2", "--bucket", bucket).stdout)
    assert [o["Key"] for o in listed["Contents"]] == ["k"]
    failed = aws_cli(
        "s3api", "get-object", "--bucket", bucket, "--key", "missing", str(tmp_path / "x"), check=False
    )
    assert failed.returncode != 0 and "NoSuchKey" in failed.stderr


@pytest.mark.slow
def test_cp_100mib_multipart(aws_cli, bucket, tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(MiB))
    aws_cli("s3", "cp", str(src), f"s3://{bucket}/big.bin")
    head = json.loads(aws_cli("s3api", "head-object", "--bucket", bucket, "--key", "big.bin").stdout)
    assert head["ContentLength"] == 100 * MiB
    assert head["ETag"].strip('"').endswith("-13")  # awscli's 8 MiB parts
    dst = tmp_path / "big.back"
    aws_cli("s3", "cp", f"s3://{bucket}/big.bin", str(dst))
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
