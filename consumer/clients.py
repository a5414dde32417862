"""The consumer's clients: Elasticsearch (checked reachable at start), the Kafka consumer and the dead-letter
producer (their keyword arguments come from :mod:`bp.kafka_config`, shared with the producer and the admin
clients), the rebalance listener, and the Kafka record → :class:`~consumer.pipeline.Message` conversion.

``consumer.report`` builds its Elasticsearch client with :func:`make_es` too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from bp.errors import ConfigError, EndpointError
from bp.kafka_config import consumer_kwargs, dead_letter_producer_kwargs
from bp.redact import mask
from bp.settings import Settings
from consumer.archive import NormalArchive
from consumer.pipeline import Message
from consumer.ports import ConsumedRecord, GroupConsumer, GroupMember, KafkaPartition
from consumer.state.keeper import StateKeeper

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch
    from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

log = logging.getLogger("bp.consumer")


def make_es(settings: Settings) -> Elasticsearch:
    """An Elasticsearch client that answered ``info()`` within ``connect_timeout_s`` (else EndpointError)."""
    from elasticsearch import Elasticsearch
    from elasticsearch.serializer import OrjsonSerializer

    options: dict[str, Any] = {
        "request_timeout": 30,
        "max_retries": 0,  # the sink retries with backoff itself, without committing meanwhile
        "retry_on_timeout": False,
        "serializer": OrjsonSerializer(),
    }
    if settings.es_api_key:
        options["api_key"] = settings.es_api_key
    elif settings.es_username:
        options["basic_auth"] = (settings.es_username, settings.es_password or "")
    if settings.es_ca_cert:
        if not settings.es_ca_cert.is_file():
            raise ConfigError(f"CA certificate {settings.es_ca_cert} not found (--es-ca-cert / BP_ES_CA_CERT)")
        options["ca_certs"] = str(settings.es_ca_cert)
    url = mask(settings.es_url, settings.secrets())
    try:
        client = Elasticsearch(settings.es_url, **options)
    except ValueError as exc:
        raise ConfigError(f"invalid Elasticsearch URL {url!r}: {mask(str(exc), settings.secrets())}") from None
    deadline = time.monotonic() + settings.connect_timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.options(request_timeout=2).info()
            return client
        except Exception as exc:  # connection refused, TLS, auth...
            last = exc
            status = getattr(getattr(exc, "meta", None), "status", None)
            if status in (401, 403):
                break
            time.sleep(0.5)
    raise EndpointError(
        f"cannot reach Elasticsearch at {url} within {settings.connect_timeout_s:.0f} s "
        f"({type(last).__name__}: {mask(str(last), settings.secrets())[:200]}); start it or set --es-url"
    )


def make_kafka(settings: Settings, rebalance: ConsumerRebalanceListener) -> tuple[KafkaConsumer, KafkaProducer]:
    """The subscribed consumer and the dead-letter producer (EndpointError when Kafka cannot be reached)."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(**consumer_kwargs(settings))
        consumer.subscribe([settings.topic], listener=rebalance)
        producer = KafkaProducer(**dead_letter_producer_kwargs(settings))
    except (KafkaError, OSError) as exc:
        raise EndpointError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} within {settings.connect_timeout_s:.0f} s "
            f"({type(exc).__name__}); start it or set --bootstrap-servers"
        ) from None
    return consumer, producer


def rejoiner(consumer: GroupMember, topic: str, listener: object) -> Callable[[], bool]:
    """Leave and re-join the group when the topic has partitions (see ``Unassigned`` in consumer/loop.py).

    Measured on Apache Kafka 3.9.1 with kafka-python 3.0.12 (about one start in ten on a loaded machine): a member
    that got an empty assignment at its first join sometimes never hears of the next rebalance, and the group
    goes on without it. Re-subscribing makes it a new member, which forces a fresh rebalance.
    """

    def rejoin() -> bool:
        if not consumer.partitions_for_topic(topic):
            return False  # nothing to be assigned: an empty assignment is right
        consumer.unsubscribe()
        consumer.subscribe([topic], listener=listener)
        return True

    return rejoin


def rebalance_listener(archive: NormalArchive, state: StateKeeper | None = None) -> ConsumerRebalanceListener:
    """A listener that forgets cached archive positions whenever partition ownership changes, and tells the state
    keeper (which hands revoked partitions' state over and restores assigned ones)."""
    from kafka import ConsumerRebalanceListener

    class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Collection[KafkaPartition]) -> None:
            archive.forget()
            if revoked:
                log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))
            if state is not None:
                state.on_revoked(revoked)

        def on_partitions_assigned(self, assigned: Collection[KafkaPartition]) -> None:
            archive.forget()
            log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
            if state is not None:
                state.on_assigned(assigned)

    return Rebalance()


def lag(consumer: GroupConsumer) -> dict[int, int] | None:
    """Messages behind the high watermark, per assigned partition (None when not known yet)."""
    lags: dict[int, int] = {}
    try:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                return None
            lags[tp.partition] = max(0, high - consumer.position(tp))
    except Exception:  # lag is informative only
        return None
    return lags


def read_to_end(consumer: GroupConsumer, timeout_ms: int = 5000) -> bool:
    """True when every assigned partition has been read to its end offset; False while Kafka does not answer
    (an outage is not idleness: ``--stop-when-idle`` waits it out)."""
    from kafka.errors import KafkaError

    assigned = list(consumer.assignment())
    if not assigned:
        return True
    try:
        ends = consumer.end_offsets(assigned, timeout_ms=timeout_ms)
        return all(consumer.position(tp) >= end for tp, end in ends.items())
    except (KafkaError, OSError, ValueError) as exc:
        log.info("cannot check the end of the partitions (%s: %s): not stopping yet", type(exc).__name__, exc)
        return False


def to_message(record: ConsumedRecord) -> Message:
    return Message(
        value=record.value,
        key=record.key,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        headers=record.headers or (),  # converted only for dead letters
    )
