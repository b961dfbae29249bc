"""server/storage/db.py: what a read and a write send to PostgreSQL besides their statements."""

from __future__ import annotations

from sqlalchemy import text

from server.storage.db import Database


async def test_reads_send_no_transaction_statements_and_writes_commit(postgres_url: str):
    db = Database(postgres_url, pool_size=1)
    sent: list[str] = []
    try:
        async with db.engine.connect() as conn:  # the pool's only connection
            driver = (await conn.get_raw_connection()).driver_connection
            driver.add_query_logger(lambda record: sent.append(record.query.split()[0]))
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
            await conn.execute(text("SELECT 2"))
        assert sent == [], "a read paid BEGIN/ROLLBACK round trips"
        async with db.write() as conn:
            await conn.execute(text("CREATE TEMPORARY TABLE probe (x int)"))
            await conn.execute(text("INSERT INTO probe VALUES (1)"))
        assert sent == ["BEGIN", "COMMIT;"]
        async with db.read() as conn:  # the write's connection, back in autocommit
            assert (await conn.execute(text("SELECT count(*) FROM probe"))).scalar() == 1
        assert sent == ["BEGIN", "COMMIT;"]
    finally:
        await db.close()
