#!/usr/bin/env bash
# The PostgreSQL run (issue 14): the store's own tests, then a representative set of service tests, each
# euca server of them keeping its state in PostgreSQL (EUCA_TEST_STORE=postgresql: a private cluster,
# initdb + pg_ctl on a unix socket in a temporary directory, a fresh database per server's data dir; see
# tests/helpers/postgres.py). scripts/test.sh already runs the store's tests on both engines; this adds the
# service tests on PostgreSQL. Run after scripts/test.sh (it installs PostgreSQL and psycopg), as .ci/run does.
# Extra arguments replace the test paths, e.g. `scripts/test-postgres.sh tests/service` for all of them.
# The last line printed is pytest's summary line.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

args=("$@")
if [ "${#args[@]}" -eq 0 ]; then
    args=(
        tests/unit/test_store.py
        tests/unit/test_store_postgres.py
        # Two hosts (data directories) on one database: identity's and Walrus's changes heard across them
        tests/unit/test_store_hosts.py
        tests/service/test_store_shared.py
        tests/service/test_s3_hosts.py
        # EC2: instances through a fake cluster, addresses, volumes, security groups, images, usage reports
        tests/service/test_ec2_instances.py
        tests/service/test_ec2_addresses.py
        tests/service/test_ec2_volumes.py
        tests/service/test_ec2_security_groups.py
        tests/service/test_images_register.py
        tests/service/test_usage_reports.py
        # IAM: case-insensitive names, renames with deferred foreign keys, policies and quotas
        tests/service/test_iam_policies.py
        tests/service/test_iam_quotas.py
        # S3: objects, listings, versions, multipart, and walrus worker processes sharing the database
        tests/service/test_s3_objects.py
        tests/service/test_s3_listing.py
        tests/service/test_s3_versioning.py
        tests/service/test_s3_multipart.py
        tests/service/test_s3_workers.py
    )
fi
echo "== EUCA_TEST_STORE=postgresql pytest -q ${args[*]}"
EUCA_TEST_STORE=postgresql "$PYTHON" -m pytest -q "${args[@]}" < /dev/null
