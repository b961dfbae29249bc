"""The `switchboard` command (also `python -m server`): serve, migrate, tenant add, token."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from server.core.auth import DEFAULT_TTL_S, ROLES, mint_token
from server.core.settings import Settings

MAX_TTL_S = 3650 * 86400  # ten years: a longer-lived token is a mistake, not a need


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="seed a demo tenant and play traffic (default: on with the "
        "embedded SQLite database, off otherwise)",
    )

    commands.add_parser("migrate", help="create or upgrade the database schema")

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    add = tenant_commands.add_parser("add", help="add a tenant")
    add.add_argument("name", help="the tenant's id, a slug")
    add.add_argument("--timezone", required=True, help="IANA time zone, e.g. Europe/Madrid")
    add.add_argument("--routing", choices=("builtin", "external"), default="builtin")

    token = commands.add_parser("token", help="print a signed token")
    token.add_argument("--tenant", required=True)
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--user", required=True, help="user id; for an agent, its agent id")
    token.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_TTL_S,
        help=f"seconds, 1 to {MAX_TTL_S} (ten years; default 12 h)",
    )

    args = parser.parse_args(argv)
    if args.command == "token" and not 0 < args.ttl <= MAX_TTL_S:
        # parser.error prints the usage and the message on standard error, exit code 2
        parser.error(f"--ttl must be from 1 to {MAX_TTL_S} seconds (ten years), not {args.ttl}")
    settings = Settings.from_env()

    if args.command == "migrate":
        from server.providers.sealing import seal_stored_credentials
        from server.storage.migrate import migrate

        migrate(settings.database_url)
        sealed = asyncio.run(seal_stored_credentials(settings.database_url, settings.secret))
        print(f"database is up to date: {_safe_url(settings.database_url)}")
        if sealed:
            print(f"sealed the stored credentials of {sealed} provider(s)")
        return 0
    if args.command == "token":
        print(mint_token(settings.secret, args.tenant, args.role, args.user, args.ttl))
        return 0
    if args.command == "tenant":
        from server.core.errors import Refused
        from server.tenants.setup import TenantExists, add_tenant

        try:
            asyncio.run(add_tenant(settings.database_url, args.name, args.timezone, args.routing))
        except (TenantExists, Refused) as exc:
            print(f"switchboard: {exc}", file=sys.stderr)
            return 2
        print(f"tenant {args.name} added ({args.timezone}, routing {args.routing})")
        return 0
    if args.command == "serve":
        from server.serve import serve

        demo = args.demo if args.demo is not None else settings.database_url.startswith("sqlite")
        return serve(settings, args.host, args.port, demo)
    return 2


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
