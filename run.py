"""Squall's one entry point: ``python run.py [serve|migrate] [--port 8000] [--database-url …]``."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Optional

from tornado_app.config import load_config
from tornado_app.logs import setup_logging
from tornado_app.startup import StartupError, check_databases, service_token_warning, sqlite_processes_warning

log = logging.getLogger("squall")


async def serve(config, sockets=None) -> None:
    """Run one serving process until SIGINT/SIGTERM, then stop gracefully."""
    from tornado_app.application import SquallServer
    from tornado_app.services import build_services

    server = SquallServer(build_services(config))
    await server.start(sockets)
    if config.metrics_port:
        server.listen_metrics(config.metrics_host, config.metrics_port, reuse_port=config.processes > 1)
    from tornado_app.eventloop import loop_name
    log.info("Squall serving on http://%s:%d (database %s, broker %s, %s event loop)", config.host, config.port,
             config.database_url.split("@")[-1], config.broker_url.split("@")[-1], loop_name())
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


def admin_command(config, action: str, username: Optional[str] = None) -> int:
    """``admin grant|revoke USERNAME`` (0 when done, 2 for an unknown username) or ``admin list``.

    Answers name users as they registered (``admin grant alice`` answers ``Alice``).
    """
    from models import init_db
    from models.schema import migrate
    from tornado_app.services.identity.users import list_admins, set_admin
    db = init_db(config.database_url)
    migrate(db)
    with db.connection_context():
        if action == "list":
            admins = list_admins()
            for name in admins:
                print(name)
            print(f"{len(admins)} admin(s)", file=sys.stderr)
            return 0
        name = set_admin(username, action == "grant")
    if name is None:
        print(f"admin {action}: no user named {username!r}", file=sys.stderr)
        return 2
    print(f"{name} is {'now' if action == 'grant' else 'no longer'} an admin")
    return 0


def list_username_collisions(config) -> int:
    """Print usernames that differ only in case or Unicode form (schema version 3 refuses them)."""
    from models import open_database
    from models.migrations import username_collisions
    db = open_database(config.database_url)
    with db.connection_context():
        groups = username_collisions(db)
    for rows in groups:
        print("  ".join(f"{uid}:{name}" for uid, name in rows))
    print(f"{len(groups)} colliding group(s)", file=sys.stderr)
    return 1 if groups else 0


def main(argv=None) -> int:
    from models.migrations import UsernameCollision
    command, config = load_config(sys.argv[1:] if argv is None else argv)
    setup_logging(config.log_level, config.log_sql, config.log_format)
    try:
        check_databases(config)
    except StartupError as exc:
        log.error("%s", exc)
        return exc.code
    if isinstance(command, tuple):  # ("admin", action[, username])
        return admin_command(config, *command[1:])
    if command == "username-collisions":
        return list_username_collisions(config)
    try:
        if command == "migrate":
            migrate_only(config)
            return 0
        warning = service_token_warning(config)
        if warning:
            log.warning("%s", warning)
        if config.processes > 1:
            warning = sqlite_processes_warning(config)
            if warning:
                log.warning("%s", warning)
            from tornado_app.workers import run_workers
            return run_workers(config, serve)
        from tornado_app.eventloop import run
        run(serve(config), config.event_loop, config.switch_interval_ms)
    except UsernameCollision as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
