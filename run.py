"""Squall's one entry point: ``python run.py [serve|migrate] [--port 8000] [--database-url …]``."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from tornado_app.config import ensure_jwt_secret, load_config
from tornado_app.logs import setup_logging

log = logging.getLogger("squall")


async def serve(config, sockets=None) -> None:
    """Run one serving process until SIGINT/SIGTERM, then stop gracefully."""
    from tornado_app.application import SquallServer
    from tornado_app.services import build_services

    server = SquallServer(build_services(config))
    await server.start(sockets)
    log.info("Squall serving on http://%s:%d (database %s, broker %s)", config.host, config.port,
             config.database_url.split("@")[-1], config.broker_url.split("@")[-1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    log.info("stopped")


def migrate_only(config) -> None:
    """Apply schema migrations and exit."""
    from models import init_db
    from models.schema import migrate
    db = init_db(config.database_url)
    version = migrate(db)
    log.info("schema is at version %d", version)


def main(argv=None) -> int:
    command, config = load_config(sys.argv[1:] if argv is None else argv)
    setup_logging(config.log_level, config.log_sql)
    config = ensure_jwt_secret(config)
    if command == "migrate":
        migrate_only(config)
        return 0
    if config.processes > 1:
        from tornado_app.workers import run_workers
        return run_workers(config, serve)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
