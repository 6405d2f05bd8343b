"""Faults injected into real processes started by the tests (see
metrics/tests/settings_version_publish_fails.py)."""

from django_redis.cache import RedisCache

VERSION_KEY_SUFFIX = ":version"


class VersionPublishFailsRedisCache(RedisCache):
    """The Redis cache, except that writing an election's figures version fails, as a write
    lost to a network blip would: every other key is read and written for real."""

    def set(self, key, *args, **kwargs):
        if str(key).endswith(VERSION_KEY_SUFFIX):
            raise ConnectionError(f"simulated fault: the cache refused to store {key}")
        return super().set(key, *args, **kwargs)
