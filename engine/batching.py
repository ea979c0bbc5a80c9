"""Step-level batching: requests that arrive while others are decoding join the running batch.

One scheduler thread owns the model while it has work. Each turn of its loop it
1. admits waiting requests (the rule alone, without a model, is `admit`), first come first
   served, up to `BatchLimits` (a number of
   sequences and a number of tokens: every sequence reserves its prompt plus its maximum new
   tokens, so memory stays bounded). A request that does not fit waits at the head of the line
   and nothing behind it overtakes it, so no request starves; one that exceeds the token cap on
   its own still runs, alone. A request for another LoRA adapter waits until the batch drains.
2. prefills the admitted requests together (left-padded, images and all) into a cache of their
   own and samples each one's first token, then merges that cache into the running batch's;
3. runs one decode step for every running sequence: one token each, in one forward pass.

Every sequence keeps its own sampling settings and seeded generator, its own thinking budget
(the conclude cue is fed to it token by token, while the others go on) and its own stop: a
cancelled, finished or failed sequence leaves the batch at the next step. Positions are given
explicitly per sequence (left padding shifts them): plain positions, or Qwen-style multimodal
rotary positions (the text position plus the sequence's own offset from its images).

Failures fail only what must fail: running out of memory while prefilling new requests
retries them one by one and fails only a request that does not fit alone; running out of
memory in a decode step undoes the step, fails the most recently admitted sequence, and
retries with the rest. Any other error in a step fails the sequences of that step.

The scheduler steps aside (finishes the running batch, admits no more) when someone waits on
the model's `FifoLock` for other work, such as scoring answers. `stop()` ends its thread:
waiting jobs end as cancelled, running ones are finished as cancelled at the next step, and
the thread lets go of the model, so a dropped engine's model can be freed.

Knows nothing of the UI or the database; requests arrive as `BatchJob`s with their inputs built.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from engine import batch_cache
from engine.decoding import AnswerTracker
from engine.errors import ENGINE_CLOSED_MESSAGE, EngineClosed
from engine.fifo import FifoLock, Ticket, busy_error
from engine.memory import (
    FAILED_MESSAGE,
    OUT_OF_MEMORY_MESSAGE,
    failure_message,
    is_out_of_memory,
    release_memory,
)
from engine.prompt_inputs import is_per_token
from engine.sampling import Decoding
from engine.types import Stats

log = logging.getLogger(__name__)

Positions = Literal["plain", "mrope"]


@dataclass(frozen=True)
class BatchLimits:
    # Sequences decoded together. Eight covers a demo's burst of users; a decode step of eight
    # costs a GPU little more than a step of one.
    max_batch_size: int = 8
    # Prompt plus maximum new tokens, summed over the running sequences: the bound on cache memory.
    max_batch_tokens: int = 32768


@dataclass
class BatchJob:
    """One request, ready to run: processor outputs for a batch of one, on the model's device."""

    request_id: str
    inputs: Mapping
    max_new: int
    # The request's sampling settings over the checkpoint's (engine.sampling).
    decoding: Decoding
    seed: int
    adapter: str | None
    tracker: AnswerTracker
    cancelled: threading.Event
    # Called once, from the scheduler thread: (stats, None) or (None, message for the user).
    finished: Callable[[Stats | None, str | None], None]

    @property
    def prompt_length(self) -> int:
        return int(self.inputs["input_ids"].shape[1])

    @property
    def reserved_tokens(self) -> int:
        return self.prompt_length + self.max_new


@dataclass
class _Row:
    """A sequence in the running batch."""

    job: BatchJob
    real_tokens: int  # tokens of this sequence in the cache (padding excluded)
    rope_delta: int
    processors: list
    generator: object
    history: list[int]  # prompt and every token fed since: what repetition penalty looks at
    next_input: int = -1
    forced: deque = field(default_factory=deque)
    done: bool = False


@dataclass
class Admission:
    """Which waiting jobs join the batch now (`admit`)."""

    group: list[BatchJob]  # join now, in arrival order
    cancelled: list[BatchJob]  # cancelled while waiting: they leave the line
    taken: int  # how many jobs leave the head of the line (the two lists above)
    adapter: str | None  # the adapter the batch runs with


def admit(pending: Sequence[BatchJob], running: Sequence[BatchJob], adapter: str | None,
          limits: BatchLimits) -> Admission:
    """The admission rule, apart from running anything: waiting jobs join in arrival order
    while the batch has room in sequences and reserved tokens, and nothing overtakes the first
    that does not fit, so no request starves. A job that exceeds the token cap on its own
    still runs, alone; a job for another adapter waits until the batch drains; jobs cancelled
    while waiting just leave the line. `adapter` is the running batch's (None when empty)."""
    group: list[BatchJob] = []
    cancelled: list[BatchJob] = []
    reserved = sum(job.reserved_tokens for job in running)
    count = len(running)
    taken = 0
    for job in pending:
        if count >= limits.max_batch_size:
            break
        if job.cancelled.is_set():
            cancelled.append(job)
            taken += 1
            continue
        if count == 0 and not group:
            adapter = job.adapter
        if job.adapter != adapter:
            break  # runs when this batch is done; nothing behind it overtakes it
        if count and reserved + job.reserved_tokens > limits.max_batch_tokens:
            break
        group.append(job)
        taken += 1
        reserved += job.reserved_tokens
        count += 1
    return Admission(group, cancelled, taken, adapter)


class BatchScheduler:
    """Runs `BatchJob`s in batches on one model. `submit` from any thread; one worker thread."""

    def __init__(self, model, *, limits: BatchLimits, positions: Positions, pad_token_id: int,
                 exclusive: FifoLock, activate_adapter: Callable,
                 max_waiting: int) -> None:
        import inspect

        self.model = model
        self.limits = limits
        self.positions = positions
        self.pad_token_id = pad_token_id
        self.exclusive = exclusive
        self.activate_adapter = activate_adapter
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._pending: deque[BatchJob] = deque()
        self._running_ids: set[str] = set()
        self._rows: list[_Row] = []
        self._cache = None
        self._mask = None
        self._adapter: str | None = None
        parameters = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in parameters
        # Qwen-style models keep the multimodal rotary offset of their last prefill here.
        self._rope_holder = next(
            (m for m in model.modules() if hasattr(m, "rope_deltas")), None)
        # Largest batch run so far: what a caller can check against the limits.
        self.peak_batch_size = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="batch-scheduler", daemon=True)
        self._thread.start()

    # -- callers' side -------------------------------------------------------------------

    def submit(self, job: BatchJob) -> None:
        with self._cond:
            if self._stopping:
                raise EngineClosed(ENGINE_CLOSED_MESSAGE)
            if self.max_waiting and len(self._pending) >= self.max_waiting:
                raise busy_error(len(self._pending))
            self._pending.append(job)
            self._cond.notify_all()

    def stop(self) -> None:
        """End the worker thread and wait for it; jobs not finished end as cancelled."""
        with self._cond:
            self._stopping = True
            waiting = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for job in waiting:
            self._settle(job, stats=job.tracker.stats(seed=job.seed, finish_reason="cancelled"))
        self._thread.join()

    def position(self, request_id: str) -> int | None:
        """0 while decoding, 1.. while waiting (1 = next to join), None when unknown."""
        with self._cond:
            if request_id in self._running_ids:
                return 0
            for index, job in enumerate(self._pending):
                if job.request_id == request_id:
                    return index + 1
        return None

    # -- the worker ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    break
            # The model is held for a whole batch session, not per step; others who need it
            # (scoring) queue on the same lock and the session ends to let them in.
            with self.exclusive.hold(Ticket("batch-scheduler"), bounded=False):
                try:
                    self._serve()
                except BaseException:  # a bug here must not kill the thread and hang callers
                    log.exception("batch scheduler failed")
                    self._fail_rows(list(self._rows), FAILED_MESSAGE)
                    self._reset_batch()
        # Nothing of the model may outlive the scheduler: the engine drops its own reference
        # and expects the model to be freed.
        self.model = self._rope_holder = self.activate_adapter = None

    def _serve(self) -> None:
        while True:
            if self._stopping:
                for row in self._rows:
                    row.job.cancelled.set()
            group = self._admit()
            if group:
                self._prefill(group)
            if self._rows:
                self._step()
                continue
            with self._cond:
                if not self._pending or self.exclusive.has_waiters():
                    return

    def _admit(self) -> list[BatchJob]:
        """Take the waiting jobs `admit` lets in, and settle those cancelled while waiting."""
        with self._cond:
            if self.exclusive.has_waiters():
                return []
            running = [row.job for row in self._rows]
            plan = admit(self._pending, running, self._adapter if running else None,
                         self.limits)
            for _ in range(plan.taken):
                self._pending.popleft()
            self._running_ids.update(job.request_id for job in plan.group)
        for job in plan.cancelled:
            self._settle(job, stats=job.tracker.stats(seed=job.seed, finish_reason="cancelled"))
        if plan.group and not self._rows:
            self.activate_adapter(plan.adapter)
            self._adapter = plan.adapter
        return plan.group

    # -- prefill -------------------------------------------------------------------------

    def _prefill(self, group: list[BatchJob]) -> None:
        try:
            rows, cache, mask, logits = self._prefill_together(group)
        except BaseException as error:
            if is_out_of_memory(error):
                release_memory(error)
            if len(group) > 1:
                # Which one does not fit (or breaks) is unknown: try each alone.
                for job in group:
                    self._prefill([job])
                return
            self._settle(group[0], message=failure_message(error))
            return
        self._join(rows, cache, mask)
        self._after_forward(rows, logits)

    def _prefill_together(self, group: list[BatchJob]):
        """One forward pass over the group's prompts: its rows, cache, mask, last logits."""
        import torch

        inputs, lengths = _collate([job.inputs for job in group], self.pad_token_id)
        mask = inputs["attention_mask"]
        kwargs = dict(inputs)
        has_images = any(key.startswith("pixel_values") for key in inputs)
        if self.positions == "plain" or not has_images:
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
            kwargs["position_ids"] = (positions if self.positions == "plain"
                                      else positions[None].expand(3, -1, -1))
        if self._keeps_logits:
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode():
            output = self.model(**kwargs, use_cache=True)
        cache = output.past_key_values
        batch_cache.check(cache)
        deltas = [0] * len(group)
        if self.positions == "mrope" and has_images:
            deltas = [int(d) for d in self._rope_holder.rope_deltas.reshape(-1).tolist()]
        rows = [self._new_row(job, length, delta)
                for job, length, delta in zip(group, lengths, deltas, strict=True)]
        return rows, cache, mask, output.logits[:, -1, :].float()

    def _new_row(self, job: BatchJob, length: int, delta: int) -> _Row:
        import torch

        generator = torch.Generator(device=self.model.device)
        generator.manual_seed(job.seed)
        history = job.inputs["input_ids"][0].tolist()
        return _Row(job, real_tokens=length, rope_delta=delta,
                    processors=_processors(job.decoding), generator=generator, history=history)

    def _join(self, rows: list[_Row], cache, mask) -> None:
        import torch

        if self._cache is None:
            self._cache, self._mask = cache, mask
        else:
            old, new = self._mask.shape[1], mask.shape[1]
            length = batch_cache.merge(self._cache, old, cache, new)
            self._mask = torch.cat([_pad_mask(self._mask, length - old),
                                    _pad_mask(mask, length - new)], dim=0)
        self._rows.extend(rows)
        self.peak_batch_size = max(self.peak_batch_size, len(self._rows))

    # -- decode --------------------------------------------------------------------------

    def _step(self) -> None:
        import torch

        for row in self._rows:
            if row.job.cancelled.is_set():
                self._finish_row(row, "cancelled")
        self._compact()
        if not self._rows:
            return
        device = self._mask.device
        input_ids = torch.tensor([[row.next_input] for row in self._rows], device=device)
        mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        real = torch.tensor([[row.real_tokens] for row in self._rows], device=device)
        if self.positions == "plain":
            position_ids = real
        else:
            deltas = torch.tensor([[row.rope_delta] for row in self._rows], device=device)
            position_ids = (real + deltas)[None].expand(3, -1, -1)
        checkpoint = batch_cache.Checkpoint.take(self._cache, self._mask.shape[1])
        try:
            with torch.inference_mode():
                output = self.model(input_ids=input_ids, attention_mask=mask,
                                    position_ids=position_ids, past_key_values=self._cache,
                                    use_cache=True)
        except BaseException as error:
            checkpoint.restore(self._cache)
            if is_out_of_memory(error):
                release_memory(error)
                # The newest sequence leaves; the ones that were decoding before it go on.
                log.warning("a decode step of %d sequences ran out of memory", len(self._rows))
                self._fail_row(self._rows[-1], OUT_OF_MEMORY_MESSAGE)
            else:
                message = failure_message(error)
                for row in self._rows:
                    self._fail_row(row, message)
            self._compact()
            return
        del checkpoint
        self._mask = mask
        for row in self._rows:
            row.real_tokens += 1
        logits = output.logits[:, -1, :].float()
        del output
        self._after_forward(self._rows, logits)

    def _after_forward(self, rows: list[_Row], logits) -> None:
        """Each row's next token: forced (the conclude cue) or sampled; then who is done."""
        chosen = self._choose(rows, logits)
        for row, token in zip(rows, chosen, strict=True):
            if row.done:
                continue
            if row.forced:
                row.next_input = row.forced.popleft()
                row.history.append(row.next_input)
                continue
            tracker = row.job.tracker
            tracker.take(token)
            row.history.append(token)
            row.next_input = token
            if row.job.cancelled.is_set():
                self._finish_row(row, "cancelled")
            elif token in tracker.eos_ids:
                self._finish_row(row, None)
            elif tracker.budget_spent:
                cue = tracker.budget_cue(row.job.max_new)
                if cue:  # fed one per step after this token, while the other rows go on
                    row.forced.extend(cue)
                else:
                    self._finish_row(row, None)
            elif tracker.generated >= row.job.max_new:
                self._finish_row(row, None)
        self._compact()

    def _choose(self, rows: list[_Row], logits) -> list[int]:
        """The sampled token of every row (forced and finished rows' entries are unused).

        Plain greedy rows share one argmax; the others go through their own processors and
        generator. The ids reach the host in one transfer: on a GPU each read is a sync.
        """
        import torch

        tokens = logits.argmax(dim=-1)
        for index, row in enumerate(rows):
            if row.done or row.forced:
                continue
            greedy = not row.job.decoding.do_sample
            if greedy and not row.processors:
                continue
            scores = logits[index][None]
            if row.processors:
                history = torch.tensor([row.history], device=scores.device)
                for processor in row.processors:
                    scores = processor(history, scores)
            if greedy:
                tokens[index] = scores.argmax(dim=-1)[0]
            else:
                probabilities = torch.softmax(scores, dim=-1)
                tokens[index] = torch.multinomial(probabilities, 1, generator=row.generator)[0, 0]
        return tokens.tolist()

    # -- leaving the batch ---------------------------------------------------------------

    def _finish_row(self, row: _Row, reason: str | None) -> None:
        row.done = True
        row.job.tracker.finish()
        self._settle(row.job, stats=row.job.tracker.stats(
            seed=row.job.seed, finish_reason=reason, max_new=row.job.max_new))

    def _fail_row(self, row: _Row, message: str) -> None:
        row.done = True
        self._settle(row.job, message=message)

    def _fail_rows(self, rows: list[_Row], message: str) -> None:
        for row in rows:
            if not row.done:
                self._fail_row(row, message)

    def _settle(self, job: BatchJob, *, stats: Stats | None = None,
                message: str | None = None) -> None:
        """The job is over: its stats, or the message of its failure, go to its caller."""
        with self._cond:
            self._running_ids.discard(job.request_id)
        job.finished(stats, message)

    def _compact(self) -> None:
        """Drop finished rows from the batch and the padding no remaining row needs."""
        keep = [index for index, row in enumerate(self._rows) if not row.done]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset_batch()
            return
        batch_cache.select(self._cache, keep)
        self._mask = self._mask[keep]
        self._rows = [self._rows[index] for index in keep]
        padding = int((self._mask.sum(dim=0) == 0).long().cumprod(dim=0).sum())
        if padding:
            batch_cache.trim_left(self._cache, padding)
            self._mask = self._mask[:, padding:]

    def _reset_batch(self) -> None:
        self._rows = []
        self._cache = None
        self._mask = None


def _processors(decoding: Decoding) -> list:
    """transformers' own logits processors for these settings, in `generate`'s order."""
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors: list = []
    if decoding.repetition_penalty is not None:
        processors.append(RepetitionPenaltyLogitsProcessor(decoding.repetition_penalty))
    if decoding.do_sample:
        if decoding.temperature is not None and decoding.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(decoding.temperature))
        if decoding.top_k:
            processors.append(TopKLogitsWarper(decoding.top_k))
        if decoding.top_p is not None and decoding.top_p < 1.0:
            processors.append(TopPLogitsWarper(decoding.top_p))
    return processors


def _pad_mask(mask, columns: int):
    import torch

    if columns == 0:
        return mask
    return torch.cat([mask.new_zeros((mask.shape[0], columns)), mask], dim=1)


def _collate(inputs: list[Mapping], pad_token_id: int) -> tuple[dict, list[int]]:
    """One left-padded batch from single-request processor outputs; each one's real length.

    Per-token tensors (ids, attention mask, token types) are padded on the left; image tensors
    of the requests that have them are concatenated in request order, which is how the models
    match image features to image tokens.
    """
    import torch

    lengths = [int(item["input_ids"].shape[1]) for item in inputs]
    longest = max(lengths)
    batch: dict = {}
    keys = list(dict.fromkeys(key for item in inputs for key in item))
    for key in keys:
        values = [item.get(key) for item in inputs]
        per_token = all(is_per_token(key, v, n) for v, n in zip(values, lengths, strict=True))
        if per_token:
            fill = pad_token_id if key == "input_ids" else 0
            batch[key] = torch.cat([
                torch.cat([v.new_full((1, longest - n), fill), v], dim=1)
                for v, n in zip(values, lengths, strict=True)], dim=0)
        else:
            present = [v for v in values if v is not None]
            batch[key] = torch.cat(present, dim=0) if len(present) > 1 else present[0]
    if "attention_mask" not in batch:
        device = batch["input_ids"].device
        batch["attention_mask"] = torch.cat([
            torch.cat([torch.zeros(1, longest - n, dtype=torch.long, device=device),
                       torch.ones(1, n, dtype=torch.long, device=device)], dim=1)
            for n in lengths], dim=0)
    return batch, lengths
