"""What tests share, imported as `helpers.<module>` (pyproject puts tests/ on pytest's sys.path).

Fixtures live in the conftest.py of the directory whose tests use them; the code those fixtures and tests
call lives here, so no test imports from a conftest or from another test module.

    server        EucaServer / start_euca: a real euca in a background thread, with credentials and clients
    aws_cli       where the real `aws` executable is and how to run it against a server
    fake_cluster  an in-process stand-in CC for the CLC's service tests
    cc_nodes      in-memory node controllers for the CC's unit tests
    bundle_keys   the cloud, user and node keys an image bundle involves (a throwaway CA)
    instances     polling and image registration for tests that run instances through the EC2 API
    image_bundles real bundles signed with a credentials directory, uploaded with boto3
    qemu_host     whether real guests can run here (the e2e tests that boot them)
    guest_ssh     ssh into real guests from a network namespace (ssh-keygen, the OpenSSH client)
    onebox_cloud  a one-box cloud and extra clusters in real processes, for the e2e tests that boot guests
    polling       free loopback ports and a poll with a long deadline, for the e2e tests
    netns_lab     network namespaces for the CC's data-path tests (cluster, client, guests, listeners)
    ec2           what the EC2 API tests share beyond their fixtures (the error code of a ClientError)
    signed        raw SigV4-signed EC2 Query requests (for what boto3 will not send)
    raw_http      raw-socket clients and a served HttpServer, for the HTTP server's tests
    postgres      a private PostgreSQL cluster (initdb + pg_ctl, unix socket), EUCA_TEST_STORE=postgresql
    walrus_process  walrus in a process of its own, to kill -9 and start again
    walrus_files  orphaned object files in a walrus data dir, read straight from the files and the store
    moto_iam      moto's server on a free loopback port (IAM answers to compare euca's with)
    iam           the IAM/STS tests' accounts, users with keys and policies, and refused calls' codes
    snapshots     volume files written and hashed, the snapshot bucket counted, waiting for a snapshot's state
    sim_nodes     many real NCs in one process on private test-driver connections (bench/scale.py)
    clc_records   the CLC records tests' starting rows (a NewReservation built one way)
"""
