"""Repair what ``verify_store`` finds: withdraw each broken unit's commit so the next run recomputes it."""

from __future__ import annotations

from dataclasses import dataclass

from featstore.store.store import FeatureStore
from featstore.store.verify import BadUnit, VerifyReport, verify_store

__all__ = ["Withdrawal", "repair_store"]


@dataclass(frozen=True)
class Withdrawal:
    """A unit whose commit ``repair_store`` withdrew, why, and the unreadable chunks it dropped."""

    bad: BadUnit
    samples: tuple[int, int]  # [start, stop) rows
    dropped: tuple[str, ...]


def repair_store(store: FeatureStore, report: VerifyReport | None = None) -> list[Withdrawal]:
    """Withdraw every unit in ``report.bad_units`` (a fresh ``verify_store`` when None)
    through ``FeatureArray.withdraw_unit``. Idempotent: a run killed part-way is
    finished by running it again. Run it while no extraction job writes the store.

    Returns:
        One Withdrawal per unit, in verify order.
    """
    report = verify_store(store) if report is None else report
    done = []
    for bad in report.bad_units:
        feat = store.feature(bad.spec)
        dropped = feat.withdraw_unit(bad.unit)
        done.append(Withdrawal(bad, feat.unit_bounds(bad.unit), tuple(dropped)))
    return done
