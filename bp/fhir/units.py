"""Units of a valueQuantity: mmHg and kPa, their spellings, and the value of a component in mmHg."""

from __future__ import annotations

import math
from typing import Any

from bp.fhir.codes import UCUM, UCUM_SYSTEMS
from bp.fhir.reasons import RejectReason, _reject, _show
from bp.reading import Rejected

MMHG_CODE = "mm[Hg]"
MMHG_UNIT = "mmHg"
KPA_UNIT = "kPa"
MMHG_PER_KPA = 7.50062

# mmHg per unit, keyed by the unit token found in valueQuantity.code (UCUM) or valueQuantity.unit: exact
# spellings first (the hot path), then any spelling below after lower-casing and collapsing spaces.
_UNIT_FACTORS: dict[str, float] = {MMHG_CODE: 1.0, MMHG_UNIT: 1.0, KPA_UNIT: MMHG_PER_KPA}
UNIT_SPELLINGS: dict[str, float] = {
    **{
        spelling: 1.0
        for spelling in (
            "mm[hg]",
            "mmhg",
            "mm hg",
            "mm(hg)",
            "mm of hg",
            "mm mercury",
            "mm of mercury",
            "millimeter of mercury",
            "millimeters of mercury",
            "millimetre of mercury",
            "millimetres of mercury",
        )
    },
    **{spelling: MMHG_PER_KPA for spelling in ("kpa", "kilopascal", "kilopascals")},
}


def _component_mmhg(components: list[dict[str, Any]], name: str) -> float | Rejected:
    """The value in mmHg of one component, or of repeats that all agree on it."""
    value = _mmhg(components[0], name)
    if len(components) == 1:
        return value
    for repeat in components[1:]:
        again = _mmhg(repeat, name)
        if isinstance(value, Rejected):
            return value
        if isinstance(again, Rejected):
            return again
        if again != value:
            return _reject(
                RejectReason.DUPLICATE_COMPONENT, f"conflicting {name} components: {value:g} and {again:g} mmHg"
            )
    return value


def _unit_factor(token: object) -> float | None:
    if not isinstance(token, str):
        return None
    factor = _UNIT_FACTORS.get(token)
    if factor is None and len(token) <= 40:
        factor = UNIT_SPELLINGS.get(" ".join(token.lower().split()))
    return factor


def _mmhg(component: dict[str, Any], name: str) -> float | Rejected:
    """The component's valueQuantity in mmHg (converted from kPa when needed)."""
    quantity = component.get("valueQuantity")
    if not isinstance(quantity, dict):
        return _reject(RejectReason.BAD_VALUE, f"{name}: no valueQuantity")
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _reject(RejectReason.BAD_VALUE, f"{name}: value {_show(value)} is not a number")
    if "comparator" in quantity:
        return _reject(RejectReason.BAD_VALUE, f"{name}: value has a comparator, not an exact measurement")
    try:
        number = float(value)
    except OverflowError:
        return _reject(RejectReason.BAD_VALUE, f"{name}: value too large")
    if not math.isfinite(number):
        return _reject(RejectReason.BAD_VALUE, f"{name}: value {number} is not finite")

    code = quantity.get("code")
    unit = quantity.get("unit")
    system = quantity.get("system")
    # A (UCUM) code decides; the unit text only counts when there is no usable code.
    if isinstance(code, str) and (
        system is None or system == UCUM or (isinstance(system, str) and system in UCUM_SYSTEMS)
    ):
        has_code = True
        code_factor = _UNIT_FACTORS.get(code) or _unit_factor(code)  # exact spelling first
    else:
        has_code = False
        code_factor = None
    unit_factor = (_UNIT_FACTORS.get(unit) or _unit_factor(unit)) if isinstance(unit, str) else None
    if code_factor is not None and unit_factor is not None and code_factor != unit_factor:
        return _reject(RejectReason.UNKNOWN_UNIT, f"{name}: code {_show(code)} and unit {_show(unit)} disagree")
    factor = code_factor if has_code else unit_factor
    if factor is None:
        return _reject(
            RejectReason.UNKNOWN_UNIT,
            f"{name}: unit {_show(code if has_code else unit)}, expected mm[Hg] or kPa",
        )
    return number if factor == 1.0 else round(number * factor, 2)

