"""Per-instance cache and resilience in front of a remote store.

(The properties are declared first so every remote backend shares them; the
cache itself follows.)
"""

from __future__ import annotations

from secretbridge.metadata import Kind, Property

CACHE_PROPERTIES: tuple[Property, ...] = (
    Property(
        "cacheTTL",
        "How long a value read from the backend is served without asking it again; 0 turns the cache off.",
        Kind.DURATION,
        default=30.0,
        minimum=0.0,
    ),
    Property(
        "negativeCacheTTL",
        "How long a 'not found' answer is remembered, so a loop asking for a missing name "
        "cannot hammer the backend; 0 turns it off.",
        Kind.DURATION,
        default=5.0,
        minimum=0.0,
    ),
    Property(
        "maxStale",
        "When a refresh fails (backend down, throttled, identity endpoint down), how long the last "
        "good value is still served; 0 never serves stale values.",
        Kind.DURATION,
        default=3600.0,
        minimum=0.0,
    ),
    Property(
        "cacheMaxEntries",
        "The most secrets (and versions) kept in memory per instance; the least recently used go first.",
        Kind.INT,
        default=100_000,
        minimum=1,
    ),
    Property(
        "requestTimeout",
        "The longest one backend call may take, retries included, before the read fails with "
        "DEADLINE_EXCEEDED (or is served stale).",
        Kind.DURATION,
        default=5.0,
        minimum=0.001,
    ),
    Property(
        "maxConcurrentRequests",
        "The most backend calls one instance makes at once; more wait their turn.",
        Kind.INT,
        default=32,
        minimum=1,
    ),
    Property(
        "failFast",
        "Fail Init when the backend cannot be reached; by default the instance starts and "
        "reports not-ready until it can.",
        Kind.BOOL,
        default=False,
    ),
)
