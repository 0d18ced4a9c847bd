from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn

from tokenrelay.events import TextDelta
from tokenrelay.runs import HEARTBEAT, RunManager
from tokenrelay.stores import StoredEvent

if TYPE_CHECKING:
    from tests.own_redis import RedisProcess

# llama.cpp's OpenMP threads spin while they wait for each other; on a machine busier than its cores (two pytest
# workers, servers, browsers) the spinning starves the very threads they wait for. Passive waiting (this process and
# every server it starts) evaluates the embedded model's prompts several times faster there.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_URL = os.environ.get("TOKENRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("TOKENRELAY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@asynccontextmanager
async def running_server(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` with real uvicorn on a free port, in this event loop; yields the base URL."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "log_level": "warning", "lifespan": "on", **config}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    task = asyncio.create_task(server.serve())
    await wait_for_async(lambda: server.started or task.done(), timeout=15, what="uvicorn to start")
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def wait_for_async(predicate: Callable[[], Any], *, timeout: float, what: str) -> None:
    """Wait until ``predicate()`` is true, checking at every turn of a short timer; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def service_missing(name: str, why: object) -> None:
    """A test that needs a real service: skipped on a developer's machine without it, a failure in CI."""
    message = f"{name} is not available ({why})"
    if IN_CI:
        pytest.fail(f"{message}; CI must provide it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def _history_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenrelay.history.sql import SQLHistory

    path = tmp_path_factory.mktemp("history") / "template.db"

    async def migrate() -> None:
        history = SQLHistory(f"sqlite+aiosqlite:///{path}")
        await history.migrate()
        await history.close()

    asyncio.run(migrate())
    return path


@pytest.fixture(autouse=True)
def _history_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _history_template: Path) -> None:
    """Servers a test starts (in process or not) keep their history in the test's own SQLite file, never in the
    work tree; copied from a migrated template, so a test does not pay for the migrations."""
    db = tmp_path / "tokenrelay.db"
    shutil.copyfile(_history_template, db)
    monkeypatch.setenv("TOKENRELAY_DATABASE_URL", f"sqlite+aiosqlite:///{db}")


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of its own in the real Redis; every key under it is deleted afterwards."""
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:
        service_missing("the redis package", exc)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        service_missing(f"Redis at {REDIS_URL}", exc)
    prefix = f"tokenrelay-test:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def postgres_schema() -> AsyncIterator[tuple[str, str]]:
    """(url, schema): a schema of its own in the real PostgreSQL database ``test``, dropped afterwards."""
    try:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine
    except ImportError as exc:
        service_missing("SQLAlchemy", exc)
    schema = f"tokenrelay_test_{secrets.token_hex(6)}"
    engine = create_async_engine(POSTGRES_URL)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        await engine.dispose()
        service_missing(f"PostgreSQL at {POSTGRES_URL}", exc)
    try:
        yield POSTGRES_URL, schema
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


async def collect(manager: RunManager, run_id: str, after: int = 0) -> list[StoredEvent]:
    """Every event of a run from ``after`` to its finish, read through a subscription (heartbeats skipped)."""
    out: list[StoredEvent] = []
    sub = await manager.subscribe(run_id, after)
    try:
        async for item in sub:
            if item is not HEARTBEAT:
                assert isinstance(item, list)
                out.extend(item)
    finally:
        await sub.aclose()
    return out


def texts(events: list[StoredEvent]) -> str:
    return "".join(e.event.text for e in events if isinstance(e.event, TextDelta))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisProcess]:
    """A redis-server of the test's own, killed (by its pid) after it."""
    from tests.own_redis import RedisProcess

    if shutil.which("redis-server") is None:
        service_missing("redis-server", "not on PATH")
    redis = RedisProcess()
    redis.start()
    try:
        await redis.ready()
        yield redis
    finally:
        redis.kill()
