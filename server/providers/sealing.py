"""Provider credentials sealed at rest (docs/channels.md, "Credentials at rest").

A provider's credentials (a Twilio auth token, a Plivo auth token, a WhatsApp access
token) are stored in the database sealed with AES-256-GCM under a key derived from the
server's secret (`SWITCHBOARD_SECRET`, or the one kept in the data directory), with
the tenant and provider as associated data: a copy of the database, a backup or a
replica gives them to nobody without the secret, and a sealed value moved to another
tenant's or provider's row does not open. Every process of a deployment shares the
secret already (it signs the tokens), so each can open what another sealed.

Stored form: `{"sealed": "v1.<base64url of nonce + ciphertext + tag>"}`. Rows written
before sealing hold the credentials as they are; `switchboard migrate` seals them
(seal_stored_credentials), and until then they are used as they are.
"""

from __future__ import annotations

import base64
import json
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine

from server.storage import models as m

log = logging.getLogger("switchboard.sealing")

SEALED = "sealed"
VERSION = "v1."
NONCE_BYTES = 12


class Unreadable(Exception):
    """Sealed under another secret, or altered: the credentials cannot be opened."""


class Sealer:
    def __init__(self, secret: str):
        key = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=b"switchboard provider credentials v1",
        ).derive(secret.encode())
        self._aead = AESGCM(key)

    def seal(self, tenant: str, provider: str, credentials: dict) -> dict:
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(credentials, separators=(",", ":")).encode()
        box = nonce + self._aead.encrypt(nonce, plain, _bound_to(tenant, provider))
        return {SEALED: VERSION + base64.urlsafe_b64encode(box).decode()}

    def open(self, tenant: str, provider: str, stored: dict | None) -> dict | None:
        """The credentials of a stored value: sealed, as stored before sealing, or None."""
        if not is_sealed(stored):
            return stored
        text = stored[SEALED]
        if not text.startswith(VERSION):
            raise Unreadable(f"unknown sealing {text[:8]!r}")
        try:
            box = base64.urlsafe_b64decode(text[len(VERSION) :])
            nonce, sealed = box[:NONCE_BYTES], box[NONCE_BYTES:]
            plain = self._aead.decrypt(nonce, sealed, _bound_to(tenant, provider))
        except (InvalidTag, ValueError) as error:
            raise Unreadable("sealed under another secret, or altered") from error
        return json.loads(plain)


def is_sealed(stored) -> bool:
    return isinstance(stored, dict) and set(stored) == {SEALED} and isinstance(stored[SEALED], str)


def _bound_to(tenant: str, provider: str) -> bytes:
    return json.dumps([tenant, provider]).encode()


async def seal_stored_credentials(database_url: str, secret: str) -> int:
    """Seal the credentials stored before sealing (`switchboard migrate`); how many."""
    sealer = Sealer(secret)
    table = m.providers
    engine = create_async_engine(database_url)
    sealed = 0
    try:
        async with engine.begin() as conn:
            rows = await conn.execute(
                select(table.c.tenant_id, table.c.provider, table.c.credentials)
            )
            for row in rows.all():
                if row.credentials is None or is_sealed(row.credentials):
                    continue
                await conn.execute(
                    update(table)
                    .where(table.c.tenant_id == row.tenant_id, table.c.provider == row.provider)
                    .values(credentials=sealer.seal(row.tenant_id, row.provider, row.credentials))
                )
                sealed += 1
    finally:
        await engine.dispose()
    if sealed:
        log.info("sealed stored provider credentials", extra={"providers": sealed})
    return sealed
