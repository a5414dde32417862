"""The consumer's seams to Kafka and Elasticsearch: small Protocols naming only the methods the consumer calls.

kafka-python ships no types, so its clients are ``Any`` to mypy; elasticsearch-py's client is typed and is
checked against these Protocols where it is passed in. The in-memory fakes of the unit tests satisfy the same
Protocols (tests/unit/test_ports.py checks that, statically in ``make lint`` and at run time).

Kafka
    :class:`GroupConsumer` (the loop and the commit protocol) · :class:`GroupMember` (re-joining the group) ·
    :class:`Seeker` (the state keeper moving newly assigned partitions) · :class:`ChangelogReader` (restoring
    state) · :class:`DeadLetterProducer` and :class:`ChangelogProducer` (the two ways the producer is used) ·
    :class:`TopicAdmin` (creating the changelog topic).
Elasticsearch
    :class:`BulkClient` (the sink) · :class:`TemplateClient` (index templates at start). The report's read side
    has its own, :class:`consumer.report.queries.SearchClient`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Protocol, runtime_checkable


# ------------------------------------------------------------------------------------------------ values
class KafkaPartition(Protocol):
    """A topic partition (``kafka.structs.TopicPartition``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...


class HasOffset(Protocol):
    """Anything with an offset: a polled record, a send's record metadata, a committed offset."""

    @property
    def offset(self) -> int: ...


class ConsumedRecord(Protocol):
    """A record the group consumer polled (``kafka.consumer.fetcher.ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


class ChangelogRecord(Protocol):
    """A record of the changelog topic as the restore reads it."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class Acknowledgement(Protocol):
    """A send's future (``kafka.producer.future.FutureRecordMetadata``): ``get`` raises if it was not delivered."""

    def get(self, timeout: float) -> object: ...


class Delivery(Protocol):
    """A send's future whose result tells the offset the record got."""

    def get(self, timeout: float) -> HasOffset: ...


# ------------------------------------------------------------------------------------------------- Kafka
@runtime_checkable
class GroupConsumer(Protocol):
    """The subscribed consumer as the loop (:func:`consumer.loop.consume`) and the commit protocol use it."""

    def poll(
        self, *, timeout_ms: int, max_records: int | None = ...
    ) -> Mapping[KafkaPartition, Sequence[ConsumedRecord]]: ...
    def assignment(self) -> AbstractSet[KafkaPartition]: ...
    def seek(self, partition: KafkaPartition, offset: int, /) -> None: ...
    def position(self, partition: KafkaPartition, /) -> int: ...
    def highwater(self, partition: KafkaPartition, /) -> int | None: ...
    def end_offsets(self, partitions: list[KafkaPartition], /, *, timeout_ms: int) -> Mapping[KafkaPartition, int]: ...
    def commit(self, offsets: dict[KafkaPartition, HasOffset], /) -> None: ...
    def pause(self, *partitions: KafkaPartition) -> None: ...
    def resume(self, *partitions: KafkaPartition) -> None: ...


@runtime_checkable
class GroupMember(Protocol):
    """What re-joining the group needs (:func:`consumer.clients.rejoiner`)."""

    def partitions_for_topic(self, topic: str, /) -> AbstractSet[int] | None: ...
    def unsubscribe(self) -> None: ...
    def subscribe(self, topics: list[str], /, *, listener: Any) -> None: ...


@runtime_checkable
class Seeker(Protocol):
    """What the state keeper does to newly assigned partitions: seek them to their state, commit that position."""

    def seek(self, partition: KafkaPartition, offset: int, /) -> None: ...
    def seek_to_beginning(self, *partitions: KafkaPartition) -> None: ...
    def commit(self, offsets: dict[KafkaPartition, HasOffset], /) -> None: ...


class KeeperConsumer(GroupConsumer, Seeker, Protocol):
    """The group consumer under the state keeper (:class:`consumer.state.keeper.StatefulConsumer` wraps it)."""


@runtime_checkable
class ChangelogReader(Protocol):
    """A group-less consumer reading one changelog partition from an offset to its end."""

    def assign(self, partitions: list[KafkaPartition], /) -> None: ...
    def seek(self, partition: KafkaPartition, offset: int, /) -> None: ...
    def end_offsets(self, partitions: list[KafkaPartition], /) -> Mapping[KafkaPartition, int]: ...
    def poll(self, *, timeout_ms: int, max_records: int) -> Mapping[KafkaPartition, Sequence[ChangelogRecord]]: ...
    def position(self, partition: KafkaPartition, /) -> int: ...
    def highwater(self, partition: KafkaPartition, /) -> int | None: ...
    def close(self) -> None: ...


@runtime_checkable
class DeadLetterProducer(Protocol):
    """The producer as the dead-letter sink uses it."""

    def send(
        self, topic: str, /, *, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Acknowledgement: ...
    def flush(self, timeout: float) -> None: ...


@runtime_checkable
class ChangelogProducer(Protocol):
    """The producer as the changelog writer uses it (explicit partition: one per input partition)."""

    def send(self, topic: str, /, *, key: bytes, value: bytes | None, partition: int) -> Delivery: ...
    def flush(self, timeout: float) -> None: ...


@runtime_checkable
class TopicAdmin(Protocol):
    """The admin client as the state keeper uses it to create the changelog topic."""

    def create_topics(self, new_topics: list[Any], /) -> object: ...
    def describe_topics(self, topics: list[str], /) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------- Elasticsearch
@runtime_checkable
class BulkClient(Protocol):
    """The part of ``elasticsearch.Elasticsearch`` the sink uses (a fake in unit tests)."""

    def bulk(self, *, operations: list[dict[str, Any]], refresh: bool | str = ...) -> Any: ...


class IndexTemplates(Protocol):
    def exists_index_template(self, *, name: str) -> object: ...
    def put_index_template(
        self,
        *,
        name: str,
        index_patterns: list[str],
        priority: int,
        template: Mapping[str, Any],
        meta: Mapping[str, Any] | None,
    ) -> object: ...


class TemplateClient(Protocol):
    """What installing the index templates needs of ``elasticsearch.Elasticsearch``."""

    @property
    def indices(self) -> IndexTemplates: ...
