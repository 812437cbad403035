"""The seeded business generator and the starter catalogue."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from daemon.simulator import SimConfig, Simulator, starter_catalogue
from daemon.simulator.documents import KINDS


def _shop(seed: int = 5) -> Simulator:
    return Simulator(SimConfig(seed=seed, catalogue=starter_catalogue(seed, items=8)))


def _ledger(sim: Simulator) -> dict[tuple[int, int], Decimal]:
    """Stock rebuilt from every effect currently applied."""
    totals: dict[tuple[int, int], Decimal] = {}
    effects = [e for item in sim.accurate.items.values() for e in item.applied]
    effects += [
        e
        for docs in sim.accurate.documents.values()
        for d in docs.values()
        for e in d.applied
    ]
    for item_id, warehouse_id, delta in effects:
        key = (item_id, warehouse_id)
        totals[key] = totals.get(key, Decimal(0)) + delta
    return totals


def test_same_seed_same_business() -> None:
    """Two shops with one seed do the same things and end with equal stock."""
    first, second = _shop(), _shop()
    assert first.business.run(150) == second.business.run(150)
    assert first.accurate.stock_snapshot() == second.accurate.stock_snapshot()


def test_stock_always_equals_the_applied_effects() -> None:
    """After creates, edits and deletes, stock is exactly the sum of what is
    applied: nothing reversed twice or left behind."""
    sim = _shop()
    actions = sim.business.run(400)
    verbs = Counter(action.split()[0] for action in actions)
    ledger = _ledger(sim)
    stock = {k: v for k, v in sim.accurate.stock.items() if v or k in ledger}
    assert {k: v for k, v in ledger.items() if v} == {
        k: v for k, v in stock.items() if v
    }
    assert verbs["create"] > 100
    assert verbs["edit"] > 10
    assert verbs["delete"] > 5
    assert verbs["opening"] > 5


def test_every_kind_once_and_awkward_quantities() -> None:
    """every_kind_once posts all 16 kinds plus an opening balance; a longer
    run produces negative stock, fractions and unitRatio != 1."""
    sim = _shop()
    actions = sim.business.every_kind_once()
    posted = {kind for kind in KINDS if sim.accurate.documents[kind]}
    sim.business.run(400)
    lines = [
        line
        for docs in sim.accurate.documents.values()
        for doc in docs.values()
        for line in doc.lines
    ]
    quantities = sim.accurate.stock.values()
    assert posted == set(KINDS)
    assert actions[-1].startswith("opening")
    assert any(q < 0 for q in quantities)
    assert any(q != q.to_integral_value() for q in quantities)
    assert any(line.unit_ratio != 1 for line in lines)


def test_starter_catalogue_quirks() -> None:
    """Quirks give Accurate numbers with stray spaces and case while Forstok
    keeps the clean SKU; the first SKU sits on two Forstok items."""
    plain = starter_catalogue(items=4)
    quirky = starter_catalogue(items=4, quirks=True)
    assert [i.no for i in plain.items if i.item_type == "INVENTORY"] == [
        "SKU-0001",
        "SKU-0002",
        "SKU-0003",
        "SKU-0004",
    ]
    assert [i.no for i in quirky.items][:4] == [
        "SKU-0001 ",
        "SKU  0002",
        "SKU-0003\u00a0",
        "sku-0004",
    ]
    assert list(quirky.forstok_products) == [
        "SKU-0001",
        "SKU 0002",
        "SKU-0003",
        "SKU-0004",
    ]
    assert quirky.forstok_products["SKU-0001"] == [7000, 8000]
    assert sum(i.item_type == "SERVICE" for i in quirky.items) == 2
