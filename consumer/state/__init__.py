"""The consumer's per-patient state: a keyed store on local disk with a cache in front, a changelog topic, and the
input position the state reflects, all moving together. Read the modules in this order:

- :mod:`~consumer.state.values` — a partition's :class:`Position` and one batch's :class:`ChangeSet`;
- :mod:`~consumer.state.store` — the keyed store the pipeline reads and writes (change sets → cache → database)
  and the checkpoint that persists a batch;
- :mod:`~consumer.state.database` — the local SQLite file (WAL; one transaction per persisted batch);
- :mod:`~consumer.state.changelog` — the changelog topic: its record format, writing it, folding it back;
- :mod:`~consumer.state.restore` — bringing one partition's local state up to its changelog;
- :mod:`~consumer.state.keeper` — the loop's side: one change set per batch, persist before commit, restore on
  assignment;
- :mod:`~consumer.state.failpoints` — fault injection for the crash tests.

Layers (read top to bottom, the first that knows a key answers):

1. the *change sets* of batches decided but not yet persisted (at most two with pipelined delivery: the batch
   being delivered and the one being decided); each belongs to one batch, so persisting batch N never writes
   batch N+1's changes, and a failed batch (rewind) drops its change set and every later one;
2. an in-memory LRU cache of persisted entries (``BP_STATE_CACHE_PATIENTS``): evicting only costs a disk read;
3. the local SQLite database (WAL): table ``state`` (partition, key) → (value, last event time) and table
   ``position`` partition → (next input offset, event-time watermark, changelog offset of its marker).

Persisting a batch (after every sink acknowledged it, before its Kafka offsets are committed):
changelog records sent and flushed → one SQLite transaction with the state changes *and* the positions.

Changelog ``<group>.state`` (compacted; one partition per input partition): per changed key one record
(key = the state key, i.e. the patient id) whose value holds the batch's next input offset, the new entry and the
entry as it was before the batch, then one *position marker* per partition (key ``\\x00position``). On restore the
last marker is the position; a record written after it by a batch that never finished (crash mid-flush) is rolled
back to its "before" entry, so a compacted changelog restores exactly the state at the marker. Expired entries
(event-time retention, see :mod:`bp.state`) are deleted with tombstones; deleting them never changes a decision.
"""
