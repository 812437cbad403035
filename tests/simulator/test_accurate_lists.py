"""`list.do` and `detail.do` (reference §4, §5): fields, filters, paging, sort."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from daemon.simulator import LineSpec, Simulator
from simulator.simhttp import query


def _invoice(sim: Simulator, stamp: str, item: str = "A", **extra: Any) -> int:
    doc = sim.accurate.create_document(
        "sales-invoice", [LineSpec(item, 1, "GDG-1")], last_update=stamp, **extra
    )
    return doc.id


async def _list(client: httpx.AsyncClient, module: str, **params: Any) -> Any:
    response = await client.get(f"/{module}/list.do?{query(**params)}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_fields_pick_columns_and_default_to_id(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """Without `fields` only id comes back; unknown names are dropped."""
    _invoice(sim, "01/02/2026 10:00:00")
    bare = await _list(accurate, "sales-invoice")
    chosen = await _list(accurate, "sales-invoice", fields="id,number,bogus,lastUpdate")
    assert bare["d"] == [{"id": 100}]
    assert set(chosen["d"][0]) == {"id", "number", "lastUpdate"}
    assert chosen["d"][0]["lastUpdate"] == "01/02/2026 10:00:00"


async def test_encoded_commas_are_not_a_list(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """`fields=id%2Cnumber` is one unknown name (reference §5), by switch."""
    _invoice(sim, "01/02/2026 10:00:00")
    encoded = await accurate.get("/sales-invoice/list.do?fields=id%2Cnumber")
    sim.config.accurate.literal_commas_only = False
    lenient = await accurate.get("/sales-invoice/list.do?fields=id%2Cnumber")
    assert encoded.json()["d"] == [{"id": 100}]
    assert set(lenient.json()["d"][0]) == {"id", "number"}


@pytest.mark.parametrize(
    ("op", "values", "expected"),
    [
        ("EQUAL", ["01/02/2026 10:00:00"], ["SI-2", "SI-3"]),
        ("GREATER_EQUAL_THAN", ["01/02/2026 10:00:00"], ["SI-2", "SI-3", "SI-4"]),
        ("GREATER_THAN", ["01/02/2026 10:00:00"], ["SI-4"]),
        ("LESS_THAN", ["01/02/2026 10:00:00"], ["SI-1"]),
        ("BETWEEN", ["31/01/2026 00:00:00", "01/02/2026 10:00:00"], ["SI-2", "SI-3"]),
        (
            "NOT_BETWEEN",
            ["01/02/2026 00:00:00", "01/02/2026 10:00:00"],
            ["SI-1", "SI-4"],
        ),
    ],
)
async def test_last_update_filter_compares_datetimes(
    sim: Simulator,
    accurate: httpx.AsyncClient,
    op: str,
    values: list[str],
    expected: list[str],
) -> None:
    """Dates are day-first and compared as datetimes, not as strings."""
    for number, stamp in [
        ("SI-1", "31/12/2025 23:59:59"),
        ("SI-2", "01/02/2026 10:00:00"),
        ("SI-3", "01/02/2026 10:00:00"),
        ("SI-4", "13/02/2026 09:00:00"),
    ]:
        _invoice(sim, stamp, number=number)
    params: dict[str, Any] = {"fields": "number", "filter__lastUpdate__op": op}
    if len(values) == 1:
        params["filter__lastUpdate__val"] = values[0]
    else:
        params["filter__lastUpdate__val[0]"], params["filter__lastUpdate__val[1]"] = (
            values
        )
    body = await _list(accurate, "sales-invoice", **params)
    assert [row["number"] for row in body["d"]] == expected
    assert body["sp"]["rowCount"] == len(expected)


async def test_trans_date_filter(sim: Simulator, accurate: httpx.AsyncClient) -> None:
    """transDate filters on the document date, dd/MM/yyyy."""
    _invoice(sim, "01/02/2026 10:00:00", number="OLD", trans_date="20/01/2026")
    _invoice(sim, "01/02/2026 10:00:00", number="NEW", trans_date="01/02/2026")
    body = await _list(
        accurate,
        "sales-invoice",
        fields="number,transDate",
        filter__transDate__op="GREATER_EQUAL_THAN",
        filter__transDate__val="25/01/2026",
    )
    assert body["d"] == [{"number": "NEW", "transDate": "01/02/2026"}]


@pytest.mark.parametrize(
    "kind", ["vendor-claim", "material-slip", "finished-good-slip"]
)
async def test_last_update_filter_silently_ignored_for_three_kinds(
    sim: Simulator, accurate: httpx.AsyncClient, kind: str
) -> None:
    """For kinds 14, 16 and 17 the filter changes nothing, rowCount included."""
    for stamp in ("01/01/2026 08:00:00", "01/02/2026 08:00:00"):
        sim.accurate.create_document(
            kind, [LineSpec("A", 1, "GDG-1")], last_update=stamp
        )
    body = await _list(
        accurate,
        kind,
        fields="id,lastUpdate",
        filter__lastUpdate__op="GREATER_THAN",
        filter__lastUpdate__val="15/01/2026 00:00:00",
    )
    assert body["s"] is True
    assert body["sp"]["rowCount"] == 2
    sim.config.accurate.kinds_without_last_update_filter = frozenset()
    honoured = await _list(
        accurate,
        kind,
        filter__lastUpdate__op="GREATER_THAN",
        filter__lastUpdate__val="15/01/2026 00:00:00",
    )
    assert honoured["sp"]["rowCount"] == 1


async def test_paging_caps_size_and_ends_empty(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """Default size 20, silent cap, counts in `sp`, empty page past the end."""
    for n in range(25):
        _invoice(sim, f"01/02/2026 10:00:{n:02d}")
    first = await _list(accurate, "sales-invoice")
    sim.config.accurate.max_page_size = 10
    capped = await _list(accurate, "sales-invoice", sp__pageSize=1000, sp__page=3)
    past = await _list(accurate, "sales-invoice", sp__pageSize=10, sp__page=4)
    assert len(first["d"]) == 20
    assert first["sp"]["pageCount"] == 2
    assert capped["sp"]["pageSize"] == 10
    assert len(capped["d"]) == 5
    assert past["d"] == []
    assert past["sp"]["rowCount"] == 25


async def test_sort_honoured_or_ignored(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """sp.sort orders rows; with the switch off the default id order stays."""
    _invoice(sim, "01/02/2026 12:00:00", number="LATE")
    _invoice(sim, "01/02/2026 09:00:00", number="EARLY")
    params = {"fields": "number", "sp__sort": "lastUpdate|asc;id|asc"}
    sorted_rows = await _list(accurate, "sales-invoice", **params)
    sim.config.accurate.honour_sort = False
    unsorted = await _list(accurate, "sales-invoice", **params)
    assert [r["number"] for r in sorted_rows["d"]] == ["EARLY", "LATE"]
    assert [r["number"] for r in unsorted["d"]] == ["LATE", "EARLY"]


async def test_newest_first_and_random_orders(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """`newest_first` reverses by lastUpdate; `random` is stable between calls."""
    for n in range(8):
        _invoice(sim, f"01/02/2026 1{n}:00:00", number=f"SI-{n}")
    sim.config.accurate.order = "newest_first"
    newest = await _list(accurate, "sales-invoice", fields="number")
    sim.config.accurate.order = "random"
    shuffled = await _list(accurate, "sales-invoice", fields="number")
    again = await _list(accurate, "sales-invoice", fields="number")
    assert [r["number"] for r in newest["d"]] == [f"SI-{n}" for n in range(7, -1, -1)]
    assert shuffled["d"] == again["d"]
    assert sorted(r["number"] for r in shuffled["d"]) == [f"SI-{n}" for n in range(8)]


async def test_detail_by_id_and_number_and_after_delete(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """detail.do finds by id or number; a deleted one is `s:false` at 200."""
    doc_id = _invoice(sim, "01/02/2026 10:00:00", number="SI-1")
    by_id = await accurate.get(f"/sales-invoice/detail.do?id={doc_id}")
    by_number = await accurate.get("/sales-invoice/detail.do?number=SI-1")
    sim.accurate.delete_document("sales-invoice", doc_id)
    gone = await accurate.get(f"/sales-invoice/detail.do?id={doc_id}")
    listed = await _list(accurate, "sales-invoice")
    line = by_id.json()["d"]["detailItem"][0]
    assert by_number.json() == by_id.json()
    assert line["item"]["no"] == "A"
    assert line["warehouse"] == {"id": line["warehouseId"], "name": "GDG-1"}
    assert gone.status_code == 200
    assert gone.json() == {"s": False, "d": ["Data tidak ditemukan atau sudah dihapus"]}
    assert listed["d"] == []


async def test_bad_filter_value_is_refused_at_200(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """A malformed date in a filter is an `s:false` answer, not a crash."""
    body = await _list(
        accurate,
        "sales-invoice",
        filter__lastUpdate__op="GREATER_THAN",
        filter__lastUpdate__val="2026-02-01 10:00",
    )
    assert body["s"] is False


async def test_item_and_warehouse_lists(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """item/list.do filters by itemType; warehouse/list.do hides Transit."""
    services = await _list(
        accurate,
        "item",
        fields="no,itemType",
        filter__itemType__op="EQUAL",
        filter__itemType__val="SERVICE",
    )
    warehouses = await _list(accurate, "warehouse", fields="name,suspended")
    assert services["d"] == [{"no": "SVC", "itemType": "SERVICE"}]
    assert [w["name"] for w in warehouses["d"]] == ["GDG-1", "GDG-2", "GDG-3"]


async def test_odd_last_update_is_shown_but_not_filtered_on(
    sim: Simulator, accurate: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    """C08 by switch: one document's `lastUpdate` shows in another form, in
    list and detail; the filter still sees the true stamp, and the other
    documents are untouched. Clearing the switch shows Accurate's form."""
    odd_id = _invoice(sim, "01/02/2026 10:10:00", number="SI-9")
    _invoice(sim, "01/02/2026 10:20:00", number="SI-10")
    switch = {"sales-invoice/SI-9": "%Y-%m-%d %H:%M"}
    response = await control.post(
        "/switches", json={"accurate": {"odd_last_update": switch}}
    )
    assert response.status_code == 200, response.text

    params = {
        "fields": "id,number,lastUpdate",
        "filter__lastUpdate__op": "GREATER_EQUAL_THAN",
        "filter__lastUpdate__val": "01/02/2026 10:05:00",
    }
    odd = await _list(accurate, "sales-invoice", **params)
    detail = await accurate.get(f"/sales-invoice/detail.do?id={odd_id}")
    sim.config.accurate.odd_last_update = {}
    valid = await _list(accurate, "sales-invoice", **params)

    assert [(r["number"], r["lastUpdate"]) for r in odd["d"]] == [
        ("SI-9", "2026-02-01 10:10"),
        ("SI-10", "01/02/2026 10:20:00"),
    ]
    assert detail.json()["d"]["lastUpdate"] == "2026-02-01 10:10"
    assert valid["d"][0]["lastUpdate"] == "01/02/2026 10:10:00"


async def test_odd_last_update_for_a_whole_module_as_plain_text(
    sim: Simulator, accurate: httpx.AsyncClient
) -> None:
    """A module key changes every row of that module; text without a
    pattern is shown as it is; other modules keep Accurate's form."""
    _invoice(sim, "01/02/2026 10:10:00", number="SI-9")
    sim.config.accurate.odd_last_update = {"sales-invoice": "kemarin"}
    invoices = await _list(accurate, "sales-invoice", fields="lastUpdate")
    items = await _list(accurate, "item", fields="no,lastUpdate")
    assert [r["lastUpdate"] for r in invoices["d"]] == ["kemarin"]
    assert all(r["lastUpdate"].count("/") == 2 for r in items["d"])
