"""S3 usage with walrus.workers: each process counts the requests it serves in memory and flushes its own
rows; none is lost, none counted twice, and a graceful stop flushes what was counted since the last flush.
The CLC's report (`euca admin report --type s3` on the same data dir) adds the processes' rows up."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from euca.cli import main
from helpers.walrus_files import state_rows
from helpers.walrus_process import free_port, s3_client, start_walrus, stop

GETS = 40
BODY = b"u" * 1000


@pytest.mark.slow
def test_each_process_counts_and_flushes_its_own(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    started = time.time()
    # A long flush interval: what the processes counted reaches the store by their flush at stop.
    proc = start_walrus(data_dir, port, workers=2, settings=["walrus.usage_flush_interval=3600"])
    try:
        s3 = s3_client(data_dir, port, request_checksum_calculation="when_required")
        s3.create_bucket(Bucket="counted")
        s3.put_object(Bucket="counted", Key="k", Body=BODY)
        presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "counted", "Key": "k"})
        for _ in range(GETS):
            with httpx.Client() as c:  # a connection of its own: the kernel picks the process
                assert c.get(presigned).content == BODY
    finally:
        stop(proc)
    rows = state_rows(
        data_dir / "state.db",
        "SELECT process, SUM(requests), SUM(bytes_in), SUM(bytes_out) FROM walrus_usage_requests "
        "WHERE bucket='counted' GROUP BY process ORDER BY process",
    )
    assert len(rows) == 2, rows  # both processes served (and flushed) a share
    assert sum(r[1] for r in rows) == GETS + 2
    assert sum(r[2] for r in rows) == len(BODY)
    assert sum(r[3] for r in rows) == GETS * len(BODY)
    ended = time.time() + 1
    result = CliRunner().invoke(
        main,
        ["--data-dir", str(data_dir), "admin", "report", "--type", "s3", "--size-unit", "B"]
        + ["--start", str(started - 1), "--end", str(ended)],
    )
    assert result.exit_code == 0, result.output
    (line,) = [r for r in csv.DictReader(io.StringIO(result.output)) if r["resource"] == "counted"]
    assert (line["requests"], line["in (B)"], line["out (B)"]) == (str(GETS + 2), "1000", str(GETS * 1000))
