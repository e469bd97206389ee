"""Entry bounds shared by the Django and cachelib adapters: the store's own
``max_entries`` bound where the backend keeps one exactly, and culling by
count in the adapter (which is what makes a Django or cachelib setting
behave as it does on those libraries' own caches)."""

from itertools import islice

# Backends whose entries an adapter can count, list and delete, so that it
# can cull them. Redis and memcached are bounded by the server instead.
CULLABLE = ("memory", "sqlite", "file")

# Of those, the ones where the adapter's culling alone keeps the bound:
# - memory:// keeps its capacity per shard (quick_cache: up to 4 shards
#   per core), so a capacity of max_entries evicts before the adapter's cull
#   point (measured: capacity 300 held 282 entries after 301 sets); and
#   Django aliases that share a LOCATION share one store (as LocMemCache's
#   do), which cannot have one capacity per alias. It keeps its own
#   capacity (default 100,000; capacity= in the URL).
# - The file log refuses bounds until it keeps them: drop it from here then.
CULLED_ONLY = ("memory", "file")


def scheme(url):
    """The URL's scheme, lower case (``sqlite:`` and ``sqlite://`` alike)."""
    return url.split(":", 1)[0].lower()


def store_bound(url, max_entries):
    """The ``max_entries`` to open ``url``'s store with: ``max_entries``
    itself (SQLite keeps it as the file's bound, for every process and
    client that writes it; Redis and memcached refuse it with
    ``UnsupportedError``), or ``None`` where the adapter's culling alone
    keeps it (:data:`CULLED_ONLY`)."""
    return None if scheme(url) in CULLED_ONLY else max_entries


def delete_some(cache, n):
    """Deletes the first ``n`` keys ``cache.keys()`` yields (key order on
    SQLite and the file log, as Django's DatabaseCache culls; the map's
    order on memory://); returns how many were there."""
    doomed = list(islice(cache.keys(), n)) if n > 0 else []
    return cache.delete_many(doomed) if doomed else 0
