"""Simulator settings and switches.

Every behaviour the reference marks as assumed ([A]) has a switch here, so a
test can run the daemon against each variant. The objects are mutable on
purpose: a test may flip a switch while the simulator serves (directly, or
through `POST /_sim/switches`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Literal

from daemon.simulator.clock import Clock, RealClock

ListOrder = Literal["id", "newest_first", "random"]
PushMode = Literal[
    "partial",
    "all_or_nothing",
    "silent_drop",
    "lost_response",
    "multi_status",
    "multi_status_applied",
    "bare_error",
]
RetryAfterForm = Literal["seconds", "http-date"]


@dataclass
class AccurateConfig:
    # Credentials the simulated database accepts: fixed dummies, so a test
    # and a daemon config can name them (S105 flags them as passwords).
    database_id: int = 10000
    database_alias: str = "PT Simulasi Stok"
    api_token: str = "sim-accurate-api-token"  # noqa: S105
    signature_secret: str = "sim-accurate-signature-secret"  # noqa: S105
    oauth_client_id: str = "sim-accurate-client"
    oauth_client_secret: str = "sim-accurate-client-secret"  # noqa: S105
    oauth_token_ttl_s: float = 1295999.0  # as in oauth-token.json
    session_ttl_s: float = 86400.0
    # Time: documents are stamped in `zone`; the API-token timestamp must be
    # within `timestamp_tolerance_s` of real time plus `server_clock_offset_s`.
    zone: str = "Asia/Jakarta"
    server_clock_offset_s: float = 0.0
    timestamp_tolerance_s: float = 600.0
    # Variants of assumed behaviour.
    auth_error_key: Literal["d", "message"] = "d"
    api_token_db_key: Literal["database", "data usaha"] = "database"  # noqa: S105
    api_token_methods: tuple[str, ...] = ("GET", "POST")
    default_page_size: int = 20
    max_page_size: int = 1000
    honour_sort: bool = True
    order: ListOrder = "id"
    kinds_without_last_update_filter: frozenset[str] = frozenset(
        {"vendor-claim", "material-slip", "finished-good-slip"}
    )
    literal_commas_only: bool = True  # `fields=a%2Cb` is one (unknown) name
    list_stock_omits_untouched: bool = True
    list_transit_warehouse: bool = False
    deleted_detail_status: int = 200
    only_approved_moves_stock: bool = True
    late_commit_s: float = 0.0  # a new document shows up this long after its stamp
    # Assumed (the reference documents only `dd/MM/yyyy HH:mm:ss`, accurate
    # §5): rows whose `lastUpdate` Accurate shows in another form (C08).
    # Key: a module (`sales-invoice`, `item`, `warehouse`) or `<module>/<no>`
    # for one document number, item number or warehouse name; value: a
    # strftime pattern applied to the row's true stamp ("%Y-%m-%d %H:%M"),
    # or plain text shown as it is. Filters and sorting still use the true
    # stamp, as a server storing a datetime would; list and detail show it.
    odd_last_update: dict[str, str] = field(default_factory=dict)
    # Bad data, as years of a merchant's database hold it: item `<no>`'s
    # balance in warehouse `<name>` shows as the raw value given, in the item
    # detail and in that warehouse's stock list. Key "<no>/<warehouse name>";
    # the value is sent as it is (None is null, a string stays a string).
    odd_item_balance: dict[str, Any] = field(default_factory=dict)
    # Limits, per database (account host and every data host together).
    rate_per_second: int = 8
    max_in_flight: int = 8
    rate_limit_status: int = 429  # 200 gives the `s:false` body at HTTP 200
    retry_after_s: int = 1
    retry_after_form: RetryAfterForm = "seconds"
    latency_s: float = 0.0
    data_hosts: int = 2


@dataclass
class ForstokConfig:
    seller_id: str = "1001"
    secret_key: str = "sim-forstok-secret-key"  # noqa: S105
    token_ttl_s: float = 3600.0
    # How a batch with bad rows is answered; every shape is assumed (forstok
    # §3: "per-row results ... unknown"). `partial`: 200 with `errors[]`,
    # good rows applied. `all_or_nothing`: 422 with `errors[]`, nothing
    # applied. `multi_status`: 207 with `errors[]`, nothing applied.
    # `multi_status_applied`: 207 with `errors[]`, good rows applied (what a
    # 207 means in RFC 4918). `bare_error`: 200 `{"status":"ERROR",
    # "message":...}` naming no row, nothing applied. `silent_drop`: 200 OK,
    # bad rows ignored. `lost_response`: applied, then no answer.
    mode: PushMode = "partial"
    requests_per_minute: int = 50
    max_in_flight: int = 1
    auth_counts_toward_limit: bool = True
    retry_after_s: int = 1  # floor; the real wait until a slot frees is used
    retry_after_form: RetryAfterForm = "seconds"
    malformed_status: int = 400
    latency_s: float = 0.0


@dataclass
class ItemSpec:
    no: str
    name: str | None = None
    item_type: Literal["INVENTORY", "SERVICE"] = "INVENTORY"
    unit: str = "PCS"
    suspended: bool = False
    upc_no: str | None = None
    opening: dict[str, Decimal] = field(default_factory=dict)  # warehouse name


@dataclass
class Catalogue:
    warehouses: tuple[str, ...] = ("GDG-1", "GDG-2", "GDG-3")
    items: list[ItemSpec] = field(default_factory=list)
    forstok_warehouses: dict[str, int] = field(
        default_factory=lambda: {"WH-1": 1, "WH-2": 2, "WH-3": 3}
    )
    # SKU -> Forstok item ids carrying it (C14: one SKU on several items).
    # Left empty, Forstok accepts any SKU and creates it.
    forstok_products: dict[str, list[int]] = field(default_factory=dict)
    forstok_on_hand: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass
class SimConfig:
    seed: int = 0
    clock: Clock = field(default_factory=RealClock)
    accurate: AccurateConfig = field(default_factory=AccurateConfig)
    forstok: ForstokConfig = field(default_factory=ForstokConfig)
    catalogue: Catalogue = field(default_factory=Catalogue)
    business_steps_per_minute: float = 0.0  # background merchant activity


def apply_switches(
    target: AccurateConfig | ForstokConfig, values: dict[str, Any]
) -> None:
    """Set switches by name from JSON values (the control API's input)."""
    known = {f.name for f in fields(target)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown switches: {', '.join(unknown)}")
    for name, value in values.items():
        current = getattr(target, name)
        if isinstance(current, frozenset):
            value = frozenset(value)
        elif isinstance(current, tuple):
            value = tuple(value)
        setattr(target, name, value)
