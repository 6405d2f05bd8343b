"""Reads of small cache keys answered in process until Redis says they changed: Redis
client-side caching, CLIENT TRACKING over RESP3 (docs/PERFORMANCE.md, item 6).

Each process keeps one connection with tracking on. Redis remembers the keys read through it
and, when any client writes or deletes one (or it expires or is evicted), pushes an
invalidation to this connection while it executes that write. Every read first drains what
the connection has received, a poll that does not wait, so a read that starts after a write
was acknowledged to anyone answers the written value: on a shared Redis as fresh as a GET,
without the round trip.

Meant for keys stored without expiry (figures versions): Redis announces an expiry only when
it removes the key, which for a key nobody reads may come later than its TTL.

Whatever is unusual makes the read an ordinary ``get``: a cache that is not django-redis,
a connection another thread is using, a connection that is not plain TCP (a Unix socket,
TLS, Sentinel: their pools know how to reach the server, this module does not), a server
that refuses RESP3 or tracking (before 6.0, or a proxy). A tracked connection the server
closed (a restart, its idle timeout) is opened again once. A hung server is raised to the
caller at once (a failed cache read, as a failed GET would be), and every error forgets every
remembered value.
"""

import logging
import os
import threading
import weakref
from typing import Any

from django_redis.cache import RedisCache
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

VALUES_MAX = 4096  # keys remembered per process; cleared when full (forgetting is always safe)


class Untrackable(Exception):
    """The cache's connections are not plain TCP: the tracked connection could not reach it."""


class TrackedReads:
    def __init__(self):
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._server: tuple | None = None  # where the connection goes, to notice a new cache
        self._pid: int | None = None
        self._values: dict[str, Any] = {}
        self._client = None  # the django-redis client last read through, and its key names
        self._names: dict[str, str] = {}
        # Caches (their django-redis clients) whose server could not be tracked.
        self._untrackable = weakref.WeakSet()

    def get(self, backend, key: str) -> Any:
        """The value of ``key`` in ``backend`` (a Django cache), None if absent."""
        if (
            not isinstance(backend, RedisCache)
            or backend.client in self._untrackable
            or not self._lock.acquire(blocking=False)
        ):
            return backend.get(key)
        try:
            return self._tracked_get(backend, key, retry=True)
        finally:
            self._lock.release()

    def _tracked_get(self, backend, key: str, *, retry: bool) -> Any:
        fresh = self._connection is None
        try:
            return self._get(backend.client, key)
        except RedisTimeoutError:
            self.close()
            raise  # a hung server: the caller's circuit breaker opens, as for any GET
        except (RedisConnectionError, ResponseError, Untrackable) as error:
            self.close()
            if not fresh and retry:
                # Closed by the server (a restart, its idle timeout, a proxy): once more, anew.
                return self._tracked_get(backend, key, retry=False)
            failure = error
        except Exception:
            self.close()
            raise
        # No tracked connection could be set up. An ordinary GET says whether the server is
        # there (else it raises, as it would have without this module); if it is, tracking
        # is what does not work with this cache, for the life of the process.
        value = backend.get(key)
        logger.warning("client-side caching unavailable (%r); reading versions with GET", failure)
        self._untrackable.add(backend.client)
        return value

    def close(self) -> None:
        self._values.clear()
        self._client = None
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.deregister_connect_callback(self._connected)
            connection.disconnect()

    def _get(self, client, key: str) -> Any:
        connection = self._connection_to(client)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = str(client.make_key(key))
        while connection.can_read():  # invalidations received since the last read
            connection.read_response(push_request=True)
        if name in self._values:
            return self._values[name]
        connection.send_command("GET", name)
        raw = connection.read_response()
        # An absent key is remembered too: Redis tracks the keys read, whether they exist or not.
        value = None if raw is None else client.decode(raw)
        if len(self._values) >= VALUES_MAX:
            self._values.clear()
            self._names.clear()
        self._values[name] = value
        return value

    def _connection_to(self, client) -> Connection:
        if client is self._client and self._connection is not None and self._pid == os.getpid():
            return self._connection
        pool = client.get_client(write=False).connection_pool
        if pool.connection_class is not Connection:
            raise Untrackable(pool.connection_class.__name__)
        kwargs = pool.connection_kwargs
        server = tuple(sorted((k, v) for k, v in kwargs.items() if isinstance(v, str | int | float | None)))
        if self._connection is not None and (self._server != server or self._pid != os.getpid()):
            self.close()  # another cache (settings changed), or a forked child of the process
        if self._connection is None:
            options = {k: v for k, v in kwargs.items() if k != "parser_class"}
            connection = Connection(**{**options, "protocol": 3})
            connection.register_connect_callback(self._connected)
            self._connection, self._server, self._pid = connection, server, os.getpid()
            connection.connect()
        self._client, self._names = client, {}  # key names depend on the cache's prefix
        return self._connection

    def _connected(self, connection: Connection) -> None:
        """On every (re)connect: tracking is per connection, so a new one knows nothing yet."""
        self._values.clear()
        connection._parser.set_invalidation_push_handler(self._invalidated)
        connection.send_command("CLIENT", "TRACKING", "ON")
        if connection.read_response() != b"OK":
            raise ResponseError("Redis refused CLIENT TRACKING")

    def _invalidated(self, message: list) -> None:
        keys = message[1] if len(message) > 1 else None
        if keys is None:  # the whole database was flushed
            self._values.clear()
            return
        for key in keys:
            self._values.pop(key.decode() if isinstance(key, bytes) else key, None)


tracked_reads = TrackedReads()
