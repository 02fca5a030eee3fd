"""Every Redis key callpulse writes, named in one place (the apply script builds the same names from `ns`).

All keys live under a namespace `cp:<topic prefix>`:
  b:<agent>:<chunk>    hash of an agent's bucket counters (`<field>.<offset>`) and chunk totals (`<field>`)
  agents               sorted set: agent -> latest event ts (who is on the floor)
  m:<agent>            team, state, since (ms) and reason, each kept with the (ts, event_id) that set it
  d:<slot>:<shard>     dedupe marks: hash of event-id digest (15 bytes) -> the records that carried the id
                       (`record_mark`s joined by '|')
  o:<topic>:<p>:<off>  dedupe mark of an invalid record (it has no event id), by its position
  s:c:<customer>       'version|json' call history for FCR;  s:t:<ticket> the same for response time
  s:q:<call_id>        'version|json' queue entries, answers and abandons of a call (queue KPIs)
  s:a:<agent>          'version|json' state history of an agent (time in state)
  qb:<queue>:<chunk>   a queue's bucket counters (not in team or floor totals);  qw:<queue> its waiting calls
                       (sorted set call_id -> entry ts)
  cb:<campaign>:<chunk>  a campaign's 10 s buckets;  cc:<campaign>:<day>, cz:<day> (floor) its hours, 31 days
  queues, campaigns    sorted sets: name -> latest event ts
  stats                event counters by topic|result and the event-lag histogram
  dirty                sorted set: agent -> Redis time (µs) of the last apply that touched it (the alert sweep's
                       input: it reads only these and the agents whose windows move by time)
  gdirty               sorted set: a queue's or campaign's chunk prefix (`qb:<queue>:`, `cb:<campaign>:`) -> Redis
                       time (µs) of the last apply that wrote its chunks or waiting calls (the monitor's cache)
  late                 hash: chunk prefix (`b:<agent>:`, `qb:<queue>:`, `cb:<campaign>:`) -> Redis time (µs) of
                       the last write to one of its chunks older than LATE_CHUNKS before now's
  notified:<alert id>  set of the webhook indexes told of an alert episode (streams/notify.py), gone on resolve
  epoch, seq, replay-lock, sweep-lease, alerts, acked, snoozes, alert-log   store and alert state
Channels: changed, alert-feed, ui.

Dedupe marks are exact: a 128-bit BLAKE2b digest of the event id; its first byte picks one of 64 shards of
the minute (`slot`) the event's ts falls in, the other 15 bytes are the field. A shard stays small enough for
Redis' compact listpack encoding (`hash-max-listpack-entries`, 128 by default: ~130 events/s; 512 as in our
docker-compose: ~540 events/s), and a whole slot expires once every event in it would be late.
"""

from __future__ import annotations

import hashlib

DEDUPE_SLOT_MS = 60_000
# A write to a chunk more than this many chunks before now's marks its subject in `late`: a reader that keeps
# sums re-reads only the chunks from LATE_CHUNKS + 1 before now's, and reads a late-marked subject whole.
LATE_CHUNKS = 2
DEDUPE_SHARDS = 64


def chunk_key(ns: str, agent: str, chunk: int) -> str:
    """An agent's chunk of buckets."""
    return f"{ns}b:{agent}:{chunk}"


def dirty_key(ns: str) -> str:
    """Sorted set of agents by the Redis time (µs) an apply last touched them."""
    return f"{ns}dirty"


def agents_key(ns: str) -> str:
    """Sorted set of the floor's agents by latest event ts."""
    return f"{ns}agents"


def meta_key(ns: str, agent: str) -> str:
    """An agent's team and state (latest by ts)."""
    return f"{ns}m:{agent}"


def customer_key(ns: str, customer_id: str) -> str:
    """A customer's call history (FCR)."""
    return f"{ns}s:c:{customer_id}"


def ticket_key(ns: str, ticket_id: str) -> str:
    """A ticket's creation/first reply (response time)."""
    return f"{ns}s:t:{ticket_id}"


def offset_mark_key(ns: str, topic: str, partition: int, offset: int) -> str:
    """The dedupe mark of an invalid record, by its position."""
    return f"{ns}o:{topic}:{partition}:{offset}"


def notified_key(ns: str, alert_id: str) -> str:
    """The webhooks told of an alert episode (so a critical-only one hears its resolve too)."""
    return f"{ns}notified:{alert_id}"


def dedupe_mark(ns: str, event_id: str, ts_ms: int) -> tuple[str, str]:
    """(hash key, field as 30 hex digits) of an event id's dedupe mark; the apply script stores the field as bytes."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=16).digest()
    return f"{ns}d:{ts_ms // DEDUPE_SLOT_MS}:{digest[0] % DEDUPE_SHARDS:02x}", digest[1:].hex()


# The topics whose records carry events, as the low bit of a record mark.
RECORD_TOPICS: dict[str, int] = {"calls": 0, "tickets": 1}


def record_mark(topic: str, partition: int, offset: int) -> str:
    """The record that carried an event, as its dedupe mark keeps it: one decimal integer, which Redis keeps in
    a listpack as an integer of at most 9 bytes (the text `'|c:3:17|'` cost about 4 bytes more per event in
    bench/floor.py). Offset + 1, so it never starts with a 0; the partition has 19 bits (Kafka allows far
    fewer partitions)."""
    return str((offset + 1) << 20 | partition << 1 | RECORD_TOPICS[topic])


def dedupe_field_bytes(hex_field: str) -> bytes:
    """The stored form of a dedupe field (what HEXISTS must be given)."""
    return bytes.fromhex(hex_field)


def queue_call_key(ns: str, call_id: str) -> str:
    """A queued call's entries, answers and abandons (queue KPIs)."""
    return f"{ns}s:q:{call_id}"


def history_key(ns: str, agent: str) -> str:
    """An agent's state history (time in state)."""
    return f"{ns}s:a:{agent}"


def queue_chunk_key(ns: str, queue: str, chunk: int) -> str:
    """One queue's chunk of buckets."""
    return f"{ns}qb:{queue}:{chunk}"


def queue_chunk_prefix(queue: str) -> str:
    """A queue's chunk keys without the namespace and chunk (what the group read script sums)."""
    return f"qb:{queue}:"


def waiting_key(ns: str, queue: str) -> str:
    """A queue's waiting calls: sorted set call_id -> entry ts (ms)."""
    return f"{ns}qw:{queue}"


def campaign_chunk_key(ns: str, campaign: str, chunk: int) -> str:
    """One campaign's chunk of 10 s buckets."""
    return f"{ns}cb:{campaign}:{chunk}"


def campaign_chunk_prefix(campaign: str) -> str:
    """A campaign's chunk keys without the namespace and chunk."""
    return f"cb:{campaign}:"


def coarse_key(ns: str, campaign: str, day: int) -> str:
    """One day of a campaign's hourly counters; the floor's when `campaign` is empty (campaigns.FLOOR)."""
    return f"{ns}cz:{day}" if campaign == "" else f"{ns}cc:{campaign}:{day}"


def registry_key(ns: str, kind: str) -> str:
    """The sorted set of queues or campaigns ('queues' | 'campaigns') -> latest event ts."""
    return f"{ns}{kind}"


def late_key(ns: str) -> str:
    """Hash of chunk prefixes -> Redis time (µs) of the last write to one of their old chunks."""
    return f"{ns}late"


def group_dirty_key(ns: str) -> str:
    """Sorted set of queue and campaign chunk prefixes by the Redis time (µs) an apply last wrote them."""
    return f"{ns}gdirty"
