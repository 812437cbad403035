"""Every assumption the API clients make about Accurate Online and Forstok.

The references (`accurate-api.md`, `forstok-api.md`) tag each fact [D]ocumented,
[O]bserved or [A]ssumed. The clients read the facts they depend on from here,
so that a fact which turns out wrong against a live account is changed in one
place, and the simulator can mirror each one with a switch. Each entry names
the reference section it comes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# --- Accurate Online ---------------------------------------------------------

# accurate §2 [A]: the client sends X-Api-Timestamp as Unix seconds (php-03);
# "iso" would send ISO-8601 UTC, the other zone-free form the server accepts.
ACCURATE_TIMESTAMP_FORM: Literal["unix", "iso"] = "unix"

# accurate §2 [D/A]: HMAC-SHA256 of the exact timestamp; we send it as Base64.
ACCURATE_SIGNATURE_ENCODING: Literal["base64", "hex"] = "base64"

# accurate §2 [D]: a timestamp further than this from server time is refused.
ACCURATE_MAX_CLOCK_SKEW_S = 600.0

# accurate §2 [D/A]: api-token.do is read with GET; a 405 means "use POST".
ACCURATE_API_TOKEN_METHODS = ("GET", "POST")

# accurate §2 [O]: the data host sits under one of these keys of `d`.
ACCURATE_DATABASE_KEYS = ("database", "data usaha")

# accurate §2 [D]: re-read the data host at least this often (TOK: 30 days).
ACCURATE_HOST_REREAD_S = 86_400.0

# accurate §1 [D]: a moved database answers 308 with the new host in Location.
ACCURATE_MOVED_STATUS = 308

# accurate §2 [D]: texts of a refused API token or signature; §2 [A]: sent in
# `d[]`, `error` or `message`, usually with HTTP 401.
ACCURATE_AUTH_FAILURE_TEXTS = (
    "invalid or revoked api token",
    "invalid_token",
    "unauthorized",
    "header x-api-signature",
    "header x-api-timestamp",
    "header x-api timestamp",
)

# accurate §2 [D]: the one auth failure a client can repair by itself.
ACCURATE_SKEW_TEXT = re.compile(r"timestamp difference", re.IGNORECASE)

# accurate §2 [D]: texts that point at the signature secret.
ACCURATE_SIGNATURE_TEXT = re.compile(r"x-api-signature", re.IGNORECASE)

# accurate §3 [O]: 401 text of an expired OAuth database session.
ACCURATE_SESSION_ERROR_TEXT = "data session key tidak tepat"

# accurate §3 [O]: `error` of an expired or invalid OAuth access token (401).
ACCURATE_OAUTH_EXPIRED_ERROR = "invalid_token"

# accurate §3 [O]: `error` of a token that lacks a scope (403).
ACCURATE_SCOPE_ERROR = "insufficient_scope"

# accurate §4 [O]: `s:false` text of a deleted or missing record, at HTTP 200.
ACCURATE_DELETED_TEXT = "tidak ditemukan atau sudah dihapus"

# accurate §6 [A]: `s:false` texts that mean "too fast"; these are retried.
ACCURATE_RETRIABLE_TEXT = re.compile(
    r"limit|batas|too many|terlalu banyak", re.IGNORECASE
)

# accurate §6 [A]: HTTP statuses retried besides network errors and timeouts.
# The reference names 502-504; a 500 is retried too (issue 4: every 5xx is
# temporary), because the client only reads and a read is safe to repeat.
ACCURATE_RETRIABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

# accurate §6 [D]: 8 calls per second; [A] the server counts arrivals in a
# sliding window. The client keeps each start in its window this much longer
# than a second so that network jitter cannot bunch nine arrivals together.
ACCURATE_WINDOW_S = 1.0
ACCURATE_WINDOW_CUSHION_S = 0.05

# accurate §3 [D/O]: open-db puts `session`/`host` at the top level or in `d`;
# db-refresh-session puts the new session in `d.session`.
ACCURATE_SESSION_KEY = "session"
ACCURATE_HOST_KEY = "host"

# accurate §5 [A]: order the client asks for, never relied upon.
ACCURATE_LIST_SORT = "lastUpdate|asc;id|asc"

# accurate §8 [A]: on-hand stock per warehouse is list-stock's `quantity`.
ACCURATE_STOCK_FIELDS = ("id", "no", "quantity")

# accurate §8 [O]: per-warehouse balances of item/detail.do.
ACCURATE_ITEM_WAREHOUSES_KEY = "detailWarehouseData"

# accurate §8 [D]: fields of warehouse/list.do the client reads.
ACCURATE_WAREHOUSE_FIELDS = ("id", "name", "suspended")

# --- Forstok -----------------------------------------------------------------

# forstok §2 [O]: the token is `data.token` of the auth answer.
FORSTOK_TOKEN_PATH = ("data", "token")

# forstok §2 [O]: `type` query value of the auth call.
FORSTOK_AUTH_TYPE = "seller"

# forstok §2 [O]: query every seller call carries besides `user_id`.
FORSTOK_SELLER_AUTH_TYPE = "jwt"

# forstok §2 [A]: renew the JWT this long before its `exp`.
FORSTOK_TOKEN_RENEW_MARGIN_S = 300.0

# forstok §2 →: renew this often when the JWT carries no `exp`.
FORSTOK_TOKEN_FALLBACK_TTL_S = 1800.0

# forstok §2 [A]: a refused credential or token is HTTP 401.
FORSTOK_AUTH_FAILURE_STATUS = 401

# forstok §3 [O]: the success body is `{"status": "OK"}`.
FORSTOK_SUCCESS_STATUS = "OK"


@dataclass(frozen=True)
class RowErrorShape:
    """Where a partial rejection names its rows (forstok §3 [A])."""

    status_code: int = 200
    list_key: str = "errors"
    sku_key: str = "sku"
    warehouse_key: str = "warehouse_id"
    message_key: str = "message"


# forstok §3 [A]: only a 200 with `errors[]` naming rows reports a partial
# success; any other non-OK answer applied nothing and is bisected.
FORSTOK_ROW_ERRORS = RowErrorShape()

# forstok §3 [A]: statuses retried unchanged; 5xx are retried as well.
FORSTOK_RETRIABLE_STATUSES = frozenset({408, 429})

# forstok §3 [A]: one request in flight, paced per minute.
FORSTOK_MAX_IN_FLIGHT = 1
FORSTOK_WINDOW_S = 60.0

# forstok §3 [A]: quantities are whole numbers, 0 or more.
FORSTOK_MIN_QUANTITY = 0
