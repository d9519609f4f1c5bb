"""Continuous batching for the embedded model: many requests decode together
in one llama.cpp context, one sequence id each.

One thread owns the model (llama.cpp is not thread-safe). Each turn of its
loop admits waiting requests into free sequences, builds one batch (the
next token of every sequence that is generating, then as much of the
waiting prompts as the batch holds), decodes it with one `llama_decode`,
and samples each sequence's next token with its own sampler chain (its own
temperature, top_p, seed...). A request that ends (end of turn, a stop
string, max_tokens) or is cancelled frees its sequence at once, and the
next waiting request takes it on the following turn.

The context's KV cache is one pool of cells shared by all sequences
(`kv_unified`). A finished sequence keeps its tokens' cells as a prompt
cache until space or its id is needed: a new prompt that starts the same
way (a common system prompt) copies that prefix (`llama_memory_seq_cp`, a
bookkeeping change: the cells are shared, not duplicated) and decodes only
the rest. Prompts admitted together wait one turn for a sibling that is
decoding the prefix they share, rather than computing it again.

A request is admitted only while the cells that those in flight hold, and
those they may still fill (the rest of their prompts, their answer
budgets), fit in the pool, so a decode never runs out of cells halfway.
`_Cells` counts a cell that several sequences share once: sixteen
requests under one 300-token system prompt need 300 cells for it, not
4,800, and so decode together in a pool of 4,096.

Embeddings go to a second context (mean pooling); the requests waiting
for one are gathered and decoded together, several sequences per decode.
"""

from __future__ import annotations

import logging
import queue
import random
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from threading import Thread
from typing import Any, TypeVar

import numpy as np

from overnight.backends.llama_requests import Answer, Generation
from overnight.settings import MAX_EMBEDDED_SEQUENCES

log = logging.getLogger("overnight.backends.llama")

T = TypeVar("T")

#: A prompt waits a turn for a sibling's copy of their shared prefix only
#: when that saves at least this many tokens of decoding.
WAIT_FOR_PREFIX = 16

#: What the sampler's repetition penalties look back on (llama-cpp-python's
#: `last_n_tokens_size` default, which the serial engine used).
PENALTY_LAST_N = 64

_NO_LOGITS = np.empty(0, dtype=np.single)


@dataclass(eq=False)
class _Slot:
    """One sequence id of the context and the tokens its cells hold
    (positions 0..len-1): a request's, or a finished one's, kept as a
    prompt cache. `cells` names the cell of each position (see `_Cells`)."""

    seq: int
    cached: list[int] = field(default_factory=list)
    cells: list[int] = field(default_factory=list)
    job: _Job | None = None


class _Cells:
    """The KV cells that the sequences hold, by name, and how many
    sequences share each: a decoded token takes a new cell, a prefix
    copied from another sequence shares that sequence's cells. Every change
    to a sequence's cells goes through here, with its llama.cpp call, so
    that `used` is what the cache holds."""

    def __init__(self) -> None:
        self._holders: dict[int, int] = {}
        self._next = 0
        self.memory: Any = None

    @property
    def used(self) -> int:
        return len(self._holders)

    def keep(self, slot: _Slot, n: int) -> None:
        """Drop the slot's cells from position `n` on."""
        if self.memory is not None:
            _low().llama_memory_seq_rm(self.memory, slot.seq, n, -1)
        if n >= len(slot.cells):
            return
        self._release(slot.cells[n:])
        del slot.cells[n:], slot.cached[n:]

    def copy(self, source: _Slot, slot: _Slot, n: int) -> None:
        """Make the slot hold exactly the first `n` of the source's cells."""
        self.keep(slot, 0)
        _low().llama_memory_seq_cp(self.memory, source.seq, slot.seq, 0, n)
        slot.cached, slot.cells = source.cached[:n], source.cells[:n]
        for cell in slot.cells:
            self._holders[cell] += 1

    def extend(self, slot: _Slot, tokens: list[int]) -> None:
        """The slot's next positions were decoded, into new cells."""
        new = range(self._next, self._next + len(tokens))
        slot.cached.extend(tokens)
        slot.cells.extend(new)
        self._holders.update(dict.fromkeys(new, 1))
        self._next = new.stop

    def exclusive(self, slot: _Slot, start: int) -> int:
        """Cells past `start` that no sequence but `slot` holds."""
        holders = self._holders
        return sum(1 for cell in slot.cells[start:] if holders[cell] == 1)

    def forget(self, slots: list[_Slot]) -> None:
        """The whole cache was cleared."""
        self._holders.clear()
        for slot in slots:
            slot.cached, slot.cells = [], []

    def _release(self, cells: list[int]) -> None:
        holders = self._holders
        for cell in cells:
            if holders[cell] == 1:
                del holders[cell]
            else:
                holders[cell] -= 1


@dataclass(eq=False)
class _Job:
    future: Future[Answer]
    generation: Generation
    sampler: Any = None
    slot: _Slot | None = None
    #: Tokens of the prompt and answer whose cells are filled.
    n_past: int = 0
    completion: list[int] = field(default_factory=list)
    #: Sampled, not yet decoded.
    next_token: int = -1
    #: Waiting for another job to decode, into its sequence, the first n
    #: prompt tokens they share.
    copy_from: tuple[_Job, _Slot, int] | None = None

    @property
    def prompt_pending(self) -> bool:
        return self.n_past < len(self.generation.prompt)


@dataclass(eq=False)
class _Embedding:
    future: Future[tuple[list[list[float]], int]]
    texts: list[str]


@dataclass(eq=False)
class _Request:
    future: Future[Answer]
    build: Callable[[Any], Generation]


@dataclass(eq=False)
class _Call:
    future: Future[Any]
    function: Callable[[], Any]


_CLOSE = object()


class BatchingEngine:
    """The embedded model's thread: `generate`, `embed` and `call` hand it
    work and return futures that it completes.

    `load` builds the generating `llama_cpp.Llama`, whose context must have
    `context_sequences(sequences)` sequence ids and a unified KV cache of
    `pool` cells; `load_embedder` the embedding one. Both run on the
    thread, on first use. At most `sequences` requests decode at once; the
    other sequence ids only keep prompt caches.
    """

    def __init__(
        self,
        *,
        name: str,
        load: Callable[[], Any],
        load_embedder: Callable[[], Any],
        sequences: int,
        n_ctx: int,
        pool: int,
    ) -> None:
        self.sequences = sequences
        self.n_ctx = n_ctx
        self.pool = pool
        self._load = load
        self._load_embedder = load_embedder
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.seeds = random.Random()
        # Owned by the thread from here on.
        self._llama: Any = None
        self._embedder: Any = None
        self._ctx: Any = None
        self._memory: Any = None
        self._cells = _Cells()
        self._vocab: Any = None
        self._batch: Any = None
        self._n_batch = 0
        self._slots = [_Slot(seq) for seq in range(context_sequences(sequences))]
        self._waiting: deque[_Job] = deque()
        self._active: list[_Job] = []
        self._embeddings: list[_Embedding] = []
        self._closing = False
        #: Prompt tokens decoded so far: those copied from another
        #: sequence's cells are not (bench/embedded.py reports the saving).
        self.prompt_tokens_decoded = 0
        self._thread = Thread(target=self._run, name=f"llama-{name}", daemon=True)
        self._thread.start()

    # -- from any thread

    @property
    def decoding(self) -> int:
        """Requests holding a sequence now (a snapshot)."""
        return len(self._active)

    def call(self, function: Callable[[], T]) -> Future[T]:
        """Run `function` on the model's thread, between two decodes."""
        future: Future[T] = Future()
        self._inbox.put(_Call(future, function))
        return future

    def generate(self, build: Callable[[Any], Generation]) -> Future[Answer]:
        """Generate for the request that `build` (run on the thread, with
        the loaded `Llama`) turns into a `Generation`. Cancelling the
        future frees the request's sequence on the next turn."""
        future: Future[Answer] = Future()
        self._inbox.put(_Request(future, build))
        return future

    def embed(self, texts: list[str]) -> Future[tuple[list[list[float]], int]]:
        """Mean-pooled embeddings of `texts`, and the tokens they took."""
        future: Future[tuple[list[list[float]], int]] = Future()
        self._inbox.put(_Embedding(future, texts))
        return future

    def close(self) -> None:
        """Stop the thread; whatever is still waiting or decoding fails."""
        self._inbox.put(_CLOSE)
        self._thread.join()

    # -- on the thread

    def _run(self) -> None:
        try:
            while not self._closing:
                self._take(block=not self._active and not self._waiting)
                try:
                    self._turn()
                except Exception as exc:  # a bug: fail what is in flight, serve on
                    log.exception("the embedded engine failed a turn")
                    self._fail_in_flight(RuntimeError(f"the embedded engine failed: {exc}"))
        finally:
            self._shut()

    def _turn(self) -> None:
        if self._embeddings:
            self._embed_waiting()
        self._drop_cancelled()
        self._admit()
        if self._active:
            self._step()

    def _take(self, *, block: bool) -> None:
        try:
            item = self._inbox.get() if block else self._inbox.get_nowait()
            while True:
                if item is _CLOSE:
                    self._closing = True
                    return
                if isinstance(item, _Embedding):
                    self._embeddings.append(item)
                elif isinstance(item, _Request):
                    self._enqueue(item)
                else:
                    _run_call(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            return

    def generator(self) -> Any:
        if self._llama is None:
            llama = self._load()
            self._ctx = llama.ctx
            self._memory = self._cells.memory = _low().llama_get_memory(self._ctx)
            self._vocab = _low().llama_model_get_vocab(llama.model)
            self._n_batch = llama.n_batch
            self._batch = _low().llama_batch_init(self._n_batch, 0, 1)
            self._llama = llama
        return self._llama

    def _enqueue(self, request: _Request) -> None:
        """Render and tokenize the request; a request that cannot be (a
        prompt too long, a bad grammar) fails here, alone."""
        if request.future.cancelled():
            return
        try:
            generation = request.build(self.generator())
            sampler = self._sampler(generation)
        except Exception as exc:
            _settle(request.future, error=exc)
            return
        self._waiting.append(_Job(request.future, generation, sampler=sampler))

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self.sequences:
            job = self._waiting[0]
            free = [slot for slot in self._slots if slot.job is None]
            plan = self._plan(job, free)
            if self._active:
                held = {cell for other in self._active if other.slot for cell in other.slot.cells}
                committed = len(held) + sum(_to_fill(other) for other in self._active)
                if committed + self._cost(job, plan, held) > self.pool:
                    return
            self._waiting.popleft()
            self._place(job, plan)

    def _plan(self, job: _Job, free: list[_Slot]) -> _Plan:
        """Where `job` would go: the free sequence that holds most of its
        prompt, the sequence to copy more of it from, or the sibling now
        decoding a longer part of it to wait for.

        The free sequence taken drops the cells it held past what the job
        reuses (all of them, if the prefix is copied from elsewhere, which
        costs nothing): it is the one that drops the fewest cells no other
        sequence holds, so that a system prompt cached once stays cached
        while requests under other prompts come and go. Then one that
        holds the longest prefix itself, then the shortest cache."""
        prompt = job.generation.prompt
        usable = len(prompt) - 1  # at least one token is decoded, for its logits

        def shared(tokens: list[int]) -> int:
            return min(_common_prefix(tokens, prompt), usable)

        cached = {s.seq: shared(s.cached) for s in self._slots}
        longest = max(cached.values())

        def loss(slot: _Slot) -> int:  # cells only it holds, that it would drop
            kept = cached[slot.seq]
            return self._cells.exclusive(slot, kept if kept == longest else 0)

        slot = min(free, key=lambda s: (loss(s), cached[s.seq] < longest, len(s.cached)))
        kept = cached[slot.seq]
        source, best = None, kept
        for other in self._slots:
            if other is not slot and cached[other.seq] > best:
                source, best = other, cached[other.seq]
        wait: tuple[_Job, _Slot, int] | None = None
        for sibling in self._active:
            if sibling.prompt_pending and sibling.copy_from is None:
                length = shared(sibling.generation.prompt)
                if length >= best + WAIT_FOR_PREFIX and sibling.slot is not None:
                    wait, best = (sibling, sibling.slot, length), length
        return _Plan(slot, kept, source, best, wait)

    def _cost(self, job: _Job, plan: _Plan, held: set[int]) -> int:
        """What placing `job` by `plan` adds to the cells that the requests
        in flight hold (`held`, each counted once) and may still fill: its
        own tokens, and the cached cells it takes over that none of them
        holds yet."""
        if plan.wait is not None:  # the sibling's cells: counted with it
            return _to_fill(job, plan.best)
        reused = plan.source.cells[: plan.best] if plan.source else plan.slot.cells[: plan.kept]
        return _to_fill(job, plan.best) + sum(1 for cell in reused if cell not in held)

    def _place(self, job: _Job, plan: _Plan) -> None:
        """Give `job` its sequence, with as much of its prompt already in
        the cache as some sequence holds."""
        slot = plan.slot
        self._cells.keep(slot, plan.kept)
        if plan.source is not None:
            self._cells.copy(plan.source, slot, plan.best)
        job.copy_from = plan.wait
        job.slot, slot.job = slot, job
        job.n_past = len(slot.cached)
        self._active.append(job)

    def _step(self) -> None:
        self._copy_prefixes()
        entries = self._fill()
        if not entries:
            return
        self._make_room(self._batch.n_tokens)
        code = _low().llama_decode(self._ctx, self._batch)
        if code == 1:  # no cells left: drop every prompt cache and try again
            self._make_room(self.pool)
            code = _low().llama_decode(self._ctx, self._batch)
        if code != 0:
            self._fail_batch(entries, code)
            return
        sample = _low().llama_sampler_sample
        for job, tokens, output in entries:
            assert job.slot is not None
            self._cells.extend(job.slot, tokens)
            job.n_past += len(tokens)
            if output is not None:
                self._sampled(job, sample(job.sampler, self._ctx, output))

    def _copy_prefixes(self) -> None:
        for job in self._active:
            if job.copy_from is None:
                continue
            source, cells, length = job.copy_from
            assert job.slot is not None
            prompt = job.generation.prompt
            if cells.cached[:length] == prompt[:length]:
                self._cells.copy(cells, job.slot, length)
                job.n_past = length
                job.copy_from = None
            elif cells.job is not source:  # it went before decoding them
                job.copy_from = None

    def _fill(self) -> list[tuple[_Job, list[int], int | None]]:
        """Put the next tokens of every sequence into the batch: one for each
        that is generating, then prompt tokens while there is room."""
        batch = self._batch
        entries: list[tuple[_Job, list[int], int | None]] = []
        n = 0
        for job in self._active:
            if not job.prompt_pending:
                _put(batch, n, job.next_token, job.n_past, job.slot, output=True)
                entries.append((job, [job.next_token], n))
                n += 1
        for job in self._active:
            room = self._n_batch - n
            if room <= 0:
                break
            if not job.prompt_pending or job.copy_from is not None:
                continue
            prompt = job.generation.prompt
            chunk = prompt[job.n_past : job.n_past + room]
            last = job.n_past + len(chunk) == len(prompt)
            for i, token in enumerate(chunk):
                end = last and i == len(chunk) - 1
                _put(batch, n + i, token, job.n_past + i, job.slot, output=end)
            entries.append((job, chunk, n + len(chunk) - 1 if last else None))
            n += len(chunk)
            self.prompt_tokens_decoded += len(chunk)
        batch.n_tokens = n
        return entries

    def _make_room(self, needed: int) -> None:
        """Free prompt caches, largest first, until `needed` more cells fit."""
        idle = sorted(
            (s for s in self._slots if s.job is None and s.cached), key=lambda s: -len(s.cached)
        )
        for slot in idle:
            if self._cells.used + needed <= self.pool:
                return
            self._cells.keep(slot, 0)

    def _sampled(self, job: _Job, token: int) -> None:
        generation = job.generation
        if _low().llama_vocab_is_eog(self._vocab, token):
            self._finish(job, "stop")
            return
        job.completion.append(token)
        if generation.stops:
            text = self._text(job)
            found = [(text.find(s), s) for s in generation.stops if s in text]
            if found:
                at, stop = min(found)
                named = stop if stop in generation.named_stops else None
                self._finish(job, "stop", text=text[:at], stop_reason=named)
                return
        criteria = generation.stopping_criteria
        if criteria is not None and criteria(
            np.asarray(generation.prompt + job.completion, dtype=np.intc), _NO_LOGITS
        ):
            self._finish(job, "stop")
            return
        if len(job.completion) >= generation.max_tokens:
            self._finish(job, "length")
            return
        job.next_token = token

    def _text(self, job: _Job) -> str:
        raw: bytes = self._llama.detokenize(job.completion)
        return raw.decode("utf-8", errors="ignore")

    def _finish(
        self, job: _Job, reason: str, *, text: str | None = None, stop_reason: str | None = None
    ) -> None:
        answer = Answer(
            text=self._text(job) if text is None else text,
            finish_reason=reason,
            stop_reason=stop_reason,
            prompt_tokens=len(job.generation.prompt),
            completion_tokens=len(job.completion),
            tokens=job.completion,
        )
        self._release(job)
        _settle(job.future, answer)

    def _release(self, job: _Job) -> None:
        """Free the job's sequence; its cells stay, as a prompt cache."""
        if job.sampler is not None:
            _low().llama_sampler_free(job.sampler)
            job.sampler = None
        if job.slot is not None:
            job.slot.job = None
            job.slot = None
        if job in self._active:
            self._active.remove(job)

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._active if j.future.cancelled()]:
            self._release(job)
        for job in [j for j in self._waiting if j.future.cancelled()]:
            self._waiting.remove(job)
            self._release(job)

    def _fail_batch(self, entries: list[tuple[_Job, list[int], int | None]], code: int) -> None:
        log.error("llama_decode failed with %d for %d sequences", code, len(entries))
        for job, _, _ in entries:
            if job.slot is not None:
                self._cells.keep(job.slot, 0)
            self._release(job)
            _settle(job.future, error=RuntimeError(f"llama_decode failed ({code})"))

    def _sampler(self, generation: Generation) -> Any:
        """The request's sampler chain, built as llama-cpp-python's serial
        engine builds it for the same settings."""
        low = _low()
        chain = low.llama_sampler_chain_init(low.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            low.llama_sampler_chain_add(chain, sampler)

        n_vocab = low.llama_vocab_n_tokens(self._vocab)
        if generation.logit_bias:
            biases = (low.llama_logit_bias * len(generation.logit_bias))()
            for i, (token, bias) in enumerate(generation.logit_bias.items()):
                biases[i].token, biases[i].bias = token, bias
            add(low.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
        add(
            low.llama_sampler_init_penalties(
                n_vocab,
                PENALTY_LAST_N,
                generation.repeat_penalty,
                generation.frequency_penalty,
                generation.presence_penalty,
            )
        )
        if generation.grammar is not None:
            grammar = low.llama_sampler_init_grammar(
                self._vocab,
                generation.grammar._grammar.encode("utf-8"),
                generation.grammar._root.encode("utf-8"),
            )
            if not grammar:
                low.llama_sampler_free(chain)
                raise ValueError("the response_format could not be turned into a grammar")
            add(grammar)
        if generation.temperature < 0:
            add(low.llama_sampler_init_dist(generation.seed))
        elif generation.temperature == 0:
            add(low.llama_sampler_init_greedy())
        else:
            add(low.llama_sampler_init_top_k(generation.top_k))
            add(low.llama_sampler_init_typical(generation.typical_p, 1))
            add(low.llama_sampler_init_top_p(generation.top_p, 1))
            add(low.llama_sampler_init_min_p(generation.min_p, 1))
            add(low.llama_sampler_init_temp(generation.temperature))
            add(low.llama_sampler_init_dist(generation.seed))
        return chain

    def _embed_waiting(self) -> None:
        """Every waiting embedding request in one call: llama-cpp-python's
        `embed` packs the texts into as few decodes as its batch allows,
        one sequence each. Should one text fail, each request is tried on
        its own, so only its line fails."""
        waiting, self._embeddings = self._embeddings, []
        waiting = [w for w in waiting if not w.future.cancelled()]
        if not waiting:
            return
        try:
            results = self._embed_together([w.texts for w in waiting])
        except Exception:
            for one in waiting:
                try:
                    _settle(one.future, self._embed_together([one.texts])[0])
                except Exception as exc:
                    _settle(one.future, error=exc)
            return
        for one, result in zip(waiting, results, strict=True):
            _settle(one.future, result)

    def _embed_together(self, groups: list[list[str]]) -> list[tuple[list[list[float]], int]]:
        if self._embedder is None:
            self._embedder = self._load_embedder()
        embedder = self._embedder
        texts = [text for group in groups for text in group]
        vectors = embedder.embed(texts)
        results, at = [], 0
        for group in groups:
            tokens = sum(
                len(embedder.tokenize(text.encode("utf-8"))[: embedder.n_batch]) for text in group
            )
            results.append((vectors[at : at + len(group)], tokens))
            at += len(group)
        return results

    def _fail_in_flight(self, error: Exception) -> None:
        for job in [*self._active, *self._waiting]:
            self._release(job)
            _settle(job.future, error=error)
        self._waiting.clear()
        self._cells.forget(self._slots)
        if self._memory is not None:
            _low().llama_memory_clear(self._memory, True)

    def _shut(self) -> None:
        closing = RuntimeError("the embedded model is shutting down")
        self._fail_in_flight(closing)
        for one in self._embeddings:
            _settle(one.future, error=closing)
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, (_Call, _Request, _Embedding)):
                _settle(item.future, error=closing)
        if self._batch is not None:
            _low().llama_batch_free(self._batch)
            self._batch = None
        for model in (self._llama, self._embedder):
            if model is not None:
                model.close()
        self._llama = self._embedder = None


def context_sequences(in_flight: int) -> int:
    """Sequence ids for `in_flight` requests at once: as many again to
    keep prompt caches in. A finished request's sequence holds its prompt
    until another request needs the id; with every id decoding, a system
    prompt that no request in flight shares is lost and decoded again.
    Spare ids cost nothing: a cache's cells are counted in the pool
    whatever holds them, and dropped when the pool needs room."""
    return min(2 * in_flight, MAX_EMBEDDED_SEQUENCES)


@dataclass
class _Plan:
    """Where a request goes (`BatchingEngine._plan`): into `slot`, keeping
    its first `kept` cached tokens, then copying the first `best` of
    `source`'s, or waiting for the sibling in `wait` to decode them."""

    slot: _Slot
    kept: int
    source: _Slot | None
    best: int
    wait: tuple[_Job, _Slot, int] | None


def _to_fill(job: _Job, start: int | None = None) -> int:
    """Cells the job may still fill: the rest of its prompt, past what it
    holds or will copy, and the rest of its answer budget (`n_past` counts
    the answer tokens decoded)."""
    if start is None:
        start = job.copy_from[2] if job.copy_from is not None else job.n_past
    return job.generation.reserved_tokens - start


def _put(batch: Any, i: int, token: int, pos: int, slot: _Slot | None, *, output: bool) -> None:
    assert slot is not None
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = slot.seq
    batch.logits[i] = output


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _run_call(call: _Call) -> None:
    if call.future.cancelled():
        return
    try:
        result = call.function()
    except Exception as exc:  # handed to the caller, who decides
        _settle(call.future, error=exc)
    else:
        _settle(call.future, result)


def _settle(future: Future[Any], result: Any = None, *, error: BaseException | None = None) -> None:
    """Complete `future`, unless it was cancelled meanwhile."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled between the check and now
        pass


def _low() -> Any:
    import llama_cpp.llama_cpp as low

    return low
