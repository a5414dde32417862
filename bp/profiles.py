"""Patient profiles of the simulator (:mod:`bp.cohort`): who the simulated patients are, and in what mix.

A profile sets the share of the cohort, ages, usual daytime pressure ranges (ACC/AHA 2017 categories, see
:mod:`bp.clinical`) and the multipliers of the episode hazards. ``profile_mix`` replaces the default shares, e.g.
:data:`PROFILE_MIXES` ``"shifted"`` (an older, more hypertensive and more hypotension-prone population) to test on
a shifted population; :func:`parse_profile_mix` reads ``"shifted"`` or ``"name=share,name=share"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """A kind of patient: share of the cohort, ages, usual daytime pressure ranges and episode propensity."""

    name: str
    share: float
    age: tuple[int, int]
    systolic: tuple[float, float]
    diastolic: tuple[float, float]
    dip: float
    variability: float
    crisis: float
    hypotension: float
    sharp_rise: float
    female_share: float = 0.5


# Usual daytime pressure ranges follow the ACC/AHA 2017 categories (see bp.clinical); episode multipliers scale
# EPISODE_RATES (hypertensive patients have more crises, hypotension-prone patients more hypotensive episodes).
PROFILES: tuple[Profile, ...] = (
    Profile("normotensive", 0.30, (20, 75), (100, 118), (64, 79), 0.12, 1.0, 0.5, 1.0, 1.2),
    Profile("elevated", 0.12, (30, 80), (120, 129), (66, 79), 0.11, 1.0, 0.8, 0.8, 1.1),
    Profile("hypertension_stage_1", 0.14, (35, 80), (130, 138), (80, 88), 0.10, 1.0, 1.2, 0.8, 1.0),
    Profile("hypertension_stage_2", 0.14, (40, 85), (142, 165), (90, 102), 0.08, 1.1, 2.0, 0.8, 0.8),
    Profile("hypotension_prone", 0.10, (18, 60), (90, 100), (55, 62), 0.10, 1.0, 0.2, 2.0, 0.8, 0.75),
    Profile("athlete", 0.08, (18, 40), (100, 115), (52, 64), 0.12, 0.8, 0.2, 0.8, 1.0),
    Profile("elderly_wide_pulse_pressure", 0.12, (70, 92), (140, 162), (62, 78), 0.06, 1.3, 1.5, 1.0, 0.8),
)

PROFILE_MIXES: dict[str, dict[str, float]] = {
    "default": {p.name: p.share for p in PROFILES},
    # Older and sicker: fewer normotensive and athletic patients, more stage 2, hypotension-prone and elderly.
    "shifted": {
        "normotensive": 0.14,
        "elevated": 0.10,
        "hypertension_stage_1": 0.14,
        "hypertension_stage_2": 0.22,
        "hypotension_prone": 0.16,
        "athlete": 0.04,
        "elderly_wide_pulse_pressure": 0.20,
    },
}


def parse_profile_mix(text: str) -> dict[str, float]:
    """A named mix (:data:`PROFILE_MIXES`) or ``name=share,...`` (shares >= 0, normalised); ValueError if bad."""
    text = text.strip()
    if text in PROFILE_MIXES:
        return dict(PROFILE_MIXES[text])
    names = {p.name for p in PROFILES}
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise ValueError(
                f"profile mix {text!r}: expected one of {sorted(PROFILE_MIXES)} or name=share,... with names from "
                f"{sorted(names)}"
            )
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"profile mix {text!r}: share of {name} is not a number") from None
        if not math.isfinite(share) or share < 0:
            raise ValueError(f"profile mix {text!r}: share of {name} must be >= 0")
        mix[name] = share
    total = sum(mix.values())
    if total <= 0:
        raise ValueError(f"profile mix {text!r}: shares add up to 0")
    return {name: share / total for name, share in mix.items()}


def quotas(n: int, mix: Mapping[str, float] | None = None) -> list[Profile]:
    """Exactly n profiles in the documented shares, or in ``mix`` (largest remainder)."""
    raw = [(p.share if mix is None else mix.get(p.name, 0.0)) * n for p in PROFILES]
    counts = [int(r) for r in raw]
    order = sorted(range(len(PROFILES)), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return [p for p, c in zip(PROFILES, counts, strict=True) for _ in range(c)]
