"""One more process serving S3 (walrus.workers): `python -m euca.roles.walrus.worker INDEX PORT`, the
configuration as JSON on stdin. Started and stopped by the walrus role (WalrusRole._run_worker).

It serves the same WalrusApp as the role's own process, on the same port (SO_REUSEPORT: the kernel spreads
connections over the processes), from the same store and objects directory. What it does not do is the
role's one-time work: schema migrations and the removal of unfinished uploads at start are the role's.
Caches stay coherent through the shared change counters (changes.py). SIGTERM stops it gracefully; it also
stops when the process that started it is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import msgspec
import trio

from euca.core.config import Config
from euca.core.http import HttpServer
from euca.core.identity import Identity
from euca.core.logs import setup_logging  # the same log format as the role's process
from euca.core.roles import Dispatcher
from euca.core.store import open_store
from euca.roles.walrus import WalrusApp, changes_path, encryption, usage
from euca.roles.walrus.backend import open_byte_store
from euca.roles.walrus.changes import Changes
from euca.roles.walrus.service import WalrusService

log = logging.getLogger("euca.walrus")


async def serve(config: Config, index: int, port: int) -> None:
    parent = os.getppid()
    store = open_store(config.store.url, config.data_path, config.store.synchronous)
    try:
        identity = Identity(store)
        storage = open_byte_store(config.walrus, config.path(config.walrus.objects_dir))
        walrus = WalrusService(store, identity, storage, config.region)
        walrus.lifecycle_day = config.walrus.lifecycle_day_seconds
        walrus.cloud_key = encryption.load_cloud_key(config.path(encryption.CLOUD_KEY_FILE))
        walrus.changes = Changes(changes_path(config), index)
        walrus.watch_other_hosts()
        await walrus.load()
        walrus.cloud_key = await encryption.cloud_key_of_the_cloud(store, walrus.cloud_key)
        app = WalrusApp(config, identity, walrus, reuse_port=True)
        app.usage.process = index
        server = HttpServer(
            Dispatcher([app]), config.walrus.listen.host, port, config.http, access_log=True, reuse_port=True
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            flusher = await nursery.start(
                usage.run, store, app.usage, config.walrus.usage_flush_interval, None
            )
            log.info("walrus worker ready index=%d pid=%d port=%d", index, os.getpid(), port)

            async def stop_on_signal_or_orphan() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async with trio.open_nursery() as watch:

                        async def orphaned() -> None:
                            while os.getppid() == parent:
                                await trio.sleep(1)
                            log.warning("walrus worker index=%d: its parent is gone", index)
                            watch.cancel_scope.cancel()

                        watch.start_soon(orphaned)
                        async for _ in signals:
                            watch.cancel_scope.cancel()
                server.shutdown()
                flusher.cancel()  # its last flush now; requests still finishing are flushed below

            nursery.start_soon(stop_on_signal_or_orphan)
        await app.usage.flush(store)
    finally:
        store.close()
    log.info("walrus worker stopped index=%d", index)


def main() -> None:
    index, port = int(sys.argv[1]), int(sys.argv[2])
    config = msgspec.json.decode(sys.stdin.buffer.read(), type=Config)
    setup_logging(config.log_level)
    trio.run(serve, config, index, port)


if __name__ == "__main__":
    main()
