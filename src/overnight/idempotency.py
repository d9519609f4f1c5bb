"""The use case behind `Idempotency-Key`: claim a key for a request, keep
its answer, or say why a second request under the key cannot run
(domain/idempotency.py has the rules, api/idempotency.py the wire).

Dialect-neutral, like `service.py`: records in, records out, errors from
`overnight.errors`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from overnight.domain.idempotency import IdempotencyRecord, Verdict, key_problem
from overnight.errors import Conflict, ConflictInProgress, InvalidRequest, OvernightError
from overnight.store.contracts import IdempotencyStore
from overnight.types import TenantId

#: The header, as the SDKs and the IETF draft spell it.
HEADER = "Idempotency-Key"


class IdempotencyKeys:
    def __init__(self, store: IdempotencyStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def claim(self, tenant: TenantId, key: str, route: str) -> tuple[IdempotencyRecord, bool]:
        """The key's record, and whether this call just claimed it (True:
        run the request, then `answer` or `release`)."""
        problem = key_problem(key)
        if problem is not None:
            raise InvalidRequest(problem, param=HEADER, code="invalid_idempotency_key")
        now = int(self.clock())
        held = await self.store.claim_idempotency_key(tenant, key, route, now)
        if held is not None:
            return held, False
        return IdempotencyRecord(tenant=tenant, key=key, route=route, created_at=now), True

    async def answer(
        self,
        claimed: IdempotencyRecord,
        *,
        request_hash: str,
        status_code: int,
        body: bytes,
        object_id: str | None,
    ) -> None:
        await self.store.answer_idempotency_key(
            claimed,
            request_hash=request_hash,
            status_code=status_code,
            body=body,
            object_id=object_id,
        )

    async def release(self, claimed: IdempotencyRecord) -> None:
        await self.store.release_idempotency_key(claimed)


def refusal(found: Verdict) -> OvernightError:
    """The error for a request that may not run under a taken key."""
    if found is Verdict.IN_USE:
        return ConflictInProgress(
            f"A request with this {HEADER} is still running; retry it shortly to get its result.",
            param=HEADER,
            code="idempotency_key_in_use",
        )
    return Conflict(
        f"This {HEADER} was already used for a different request (another body or route). "
        "Send a new key for a new request.",
        param=HEADER,
        code="idempotency_key_reused",
    )
