"""The sender: the loop that delivers webhook events, at least once.

It runs beside a worker (runtime.py), under the worker's id. The events
themselves are already durable: the transaction that ended a batch wrote one
delivery per listening endpoint (the outbox). The sender claims the due
ones (a lease per delivery, so a sender that dies mid-attempt leaves them
to be claimed again once it lapses, or at once by the next start on SQLite),
and for each: checks where the endpoint's host points (targets.py), signs
(signing.py), POSTs (posting.py), and records the attempt in the log with
what comes next, delivered, due again after a backoff, or failed for good
once the retry window has closed. The event id is the `webhook-id` of every
attempt, a crash's repeat included, so receivers can drop duplicates.

Up to `webhook_concurrency` attempts run at once. Wake-ups (a batch ended in
this process) and `poll_interval` decide when it looks for due deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from overnight.domain.webhooks import AttemptResult, Delivery
from overnight.errors import StorageError
from overnight.runner.wakeups import Backoff, Wakeups
from overnight.settings import Settings
from overnight.store.contracts import DeliveryStore
from overnight.types import WorkerId
from overnight.webhooks import signing
from overnight.webhooks.posting import post
from overnight.webhooks.targets import Resolver, TargetRefused, resolve_target, system_resolver

log = logging.getLogger("overnight.webhooks")

#: Seconds between prunings of old deliveries and log lines.
PRUNE_INTERVAL = 3600.0


class Sender:
    def __init__(
        self,
        *,
        store: DeliveryStore,
        settings: Settings,
        worker: WorkerId,
        wakeups: Wakeups,
        resolve: Resolver = system_resolver,
    ) -> None:
        self.store = store
        self.settings = settings
        self.worker = worker
        self.wakeups = wakeups
        self.resolve = resolve
        self.retries = settings.webhook_retries
        self._rng = random.Random()
        self._active: set[asyncio.Task[None]] = set()

    @property
    def lease(self) -> float:
        """How long a claim holds: an attempt's timeout, and a margin."""
        return self.settings.webhook_timeout + self.settings.lease_ttl

    async def run(self) -> None:
        wake = self.wakeups.subscribe()
        backoff = Backoff(self.settings.poll_interval, self.settings.idle_poll_interval)
        pruned: float | None = None
        try:
            while True:
                found = True  # after a failed look, look again soon
                try:
                    if pruned is None or time.monotonic() - pruned > PRUNE_INTERVAL:
                        await self._prune()
                        pruned = time.monotonic()
                    found = await self._claim_and_start(wake)
                except StorageError:  # transient (a lock, a lost connection): go round again
                    log.warning("claiming webhook deliveries failed; retrying", exc_info=True)
                await backoff.wait(wake, found)
        finally:
            for task in self._active:
                task.cancel()
            await asyncio.gather(*self._active, return_exceptions=True)

    async def _claim_and_start(self, wake: asyncio.Event) -> bool:
        """Claim and start the deliveries that are due; whether there were any."""
        room = self.settings.webhook_concurrency - len(self._active)
        if room <= 0:
            return False
        claimed = await self.store.claim_deliveries(self.worker, time.time(), self.lease, room)

        def finished(task: asyncio.Task[None]) -> None:
            self._active.discard(task)
            wake.set()

        for delivery in claimed:
            task = asyncio.create_task(self.deliver(delivery), name="webhook-attempt")
            self._active.add(task)
            task.add_done_callback(finished)
        return bool(claimed)

    async def _prune(self) -> None:
        before = time.time() - self.settings.webhook_log_retention
        pruned = await self.store.delete_old_webhook_records(before)
        if pruned:
            log.info("pruned %d old webhook deliveries and log lines", pruned)

    async def deliver(self, delivery: Delivery) -> None:
        """One attempt of `delivery`, recorded. A failure to record it is
        logged: the claim lapses, and the delivery is attempted again."""
        result = await self.attempt(delivery)
        now = time.time()
        retry_at = (
            None
            if result.succeeded
            else self.retries.next_attempt_at(delivery.attempt, delivery.created_at, now, self._rng)
        )
        try:
            disabled = await self.store.record_attempt(
                delivery,
                self.worker,
                result,
                retry_at=retry_at,
                now=now,
                disable_after=self.settings.webhook_disable_after,
            )
        except StorageError:
            log.warning("recording webhook %s failed; it will be sent again", delivery.event_id)
            return
        if result.succeeded:
            log.info(
                "webhook %s (%s) delivered to %s on attempt %d",
                delivery.event_id,
                delivery.event_type.value,
                delivery.endpoint_id,
                delivery.attempt,
            )
            return
        next_step = f"retrying in {retry_at - now:.1f} s" if retry_at is not None else "given up"
        log.warning(
            "webhook %s to %s attempt %d %s; %s",
            delivery.event_id,
            delivery.endpoint_id,
            delivery.attempt,
            result.describe(),
            next_step,
        )
        if disabled:
            log.error(
                "webhook endpoint %s is disabled: every delivery failed for %.0f s",
                delivery.endpoint_id,
                self.settings.webhook_disable_after,
            )

    async def attempt(self, delivery: Delivery) -> AttemptResult:
        """Check the target, sign, send: what came of it."""
        started = time.monotonic()
        timeout = self.settings.webhook_timeout
        try:
            async with asyncio.timeout(timeout):
                target = await resolve_target(
                    delivery.url,
                    allow_private=self.settings.webhook_allow_private_targets,
                    resolve=self.resolve,
                )
        except (TargetRefused, TimeoutError) as refused:
            problem = str(refused) or f"resolving the host took over {timeout:g} s"
            return AttemptResult(None, round((time.monotonic() - started) * 1000), problem)
        headers = signing.headers(
            delivery.secrets, delivery.event_id, int(time.time()), delivery.body
        )
        return await post(target, delivery.body, headers, time_limit=timeout)
