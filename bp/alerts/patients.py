"""Per-patient alert state over a keyed state store: what the consumer and ``--check`` call per reading. Pure.

:class:`PatientAlerts` loads a patient's :class:`~bp.alerts.values.AlertState` (key ``alerts/<patient>``, beside
the feature history), runs :func:`~bp.alerts.logic.step` and saves the new state only when it changed.
"""

from __future__ import annotations

from bp.alerts.logic import step
from bp.alerts.policy import AlertPolicy
from bp.alerts.values import EMPTY, AlertEvent, Context, state_from_bytes, state_to_bytes
from bp.reading import Reading
from bp.state import DEFAULT_RETENTION_DAYS, KeyedState, MemoryState, Retained

STATE_KEY_PREFIX = "alerts/"  # alert state lives beside the feature history in the same keyed state


class PatientAlerts:
    """Per-patient alert state over a :class:`~bp.state.KeyedState` (key ``alerts/<patient>``): what the consumer
    and ``--check`` use. Patients are forgotten only by the state's event-time retention, like the features."""

    __slots__ = ("_retained", "policy")

    def __init__(
        self, policy: AlertPolicy, state: KeyedState | None = None, retention_days: float = DEFAULT_RETENTION_DAYS
    ) -> None:
        self.policy = policy
        self._retained = Retained(state if state is not None else MemoryState(), retention_days)

    def observe(
        self,
        reading: Reading,
        risk: float | None,
        minutes_since_previous: float | None = None,
        context: Context | None = None,
    ) -> tuple[AlertEvent, ...]:
        """The alert events of ``reading`` (in stream order per patient); the patient's state is updated.
        ``minutes_since_previous`` and ``context``: from the feature history
        (:func:`bp.features.minutes_since_previous`, :func:`context_columns`)."""
        key = STATE_KEY_PREFIX + reading.patient_id
        at = reading.effective.timestamp()
        previous = self._retained.load(key, at)
        state = EMPTY if previous is None else state_from_bytes(previous.value)
        new, events = step(state, reading, risk, self.policy, minutes_since_previous, context)
        if new is not state and not (previous is None and new is EMPTY):
            self._retained.save(key, state_to_bytes(new), at, previous)
        return events
