"""The in-memory fakes the unit tests drive the consumer with implement the consumer's client Protocols
(consumer/ports.py): statically (``make lint`` type-checks this module, so a fake whose signature drifts from the
Protocol fails there) and at run time (every method the Protocol names exists)."""

from __future__ import annotations

from pathlib import Path

from consumer import ports
from consumer.state.keeper import StateKeeper
from tests.unit.test_consume_loop import FakeConsumer, FakeSinks
from tests.unit.test_sinks import FakeBulk, FakeProducer
from tests.unit.test_state import FakeLog, FakeReader
from tests.unit.test_state_keeper import GroupConsumer, keeper_with


def test_fakes_implement_the_client_protocols(tmp_path: Path) -> None:
    sinks = FakeSinks(tmp_path / "archive")
    log = FakeLog()
    keeper: StateKeeper = keeper_with(log, tmp_path / "state.sqlite")
    # Annotated assignments: mypy checks each fake against its Protocol.
    group: ports.GroupConsumer = FakeConsumer(1, 1, sinks)
    bulk: ports.BulkClient = sinks
    other_bulk: ports.BulkClient = FakeBulk()
    letters: ports.DeadLetterProducer = sinks
    other_letters: ports.DeadLetterProducer = FakeProducer()
    changelog: ports.ChangelogProducer = log
    reader: ports.ChangelogReader = FakeReader(log)
    seeker: ports.Seeker = GroupConsumer(keeper)
    checks: list[tuple[object, type]] = [
        (group, ports.GroupConsumer),
        (bulk, ports.BulkClient),
        (other_bulk, ports.BulkClient),
        (letters, ports.DeadLetterProducer),
        (other_letters, ports.DeadLetterProducer),
        (changelog, ports.ChangelogProducer),
        (reader, ports.ChangelogReader),
        (seeker, ports.Seeker),
    ]
    for fake, protocol in checks:
        assert isinstance(fake, protocol), f"{type(fake).__name__} does not implement {protocol.__name__}"


def test_a_fake_without_a_protocol_method_is_caught() -> None:
    class Incomplete:
        def seek(self, partition: object, offset: int) -> None: ...

    assert not isinstance(Incomplete(), ports.Seeker)
