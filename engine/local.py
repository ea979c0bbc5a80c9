"""The in-process engine: one transformers model, shared by every caller.

Implements `engine.protocol.Engine`: `stream(request)` yields reasoning / answer deltas and
then one "done" event with `Stats`; `cancel(request_id)` stops that request, waiting or
running. Requests are served first come, first served; `queue_position(request_id)` tells a
waiting caller where it stands. Closing the stream iterator (a closed browser tab) cancels too.
`close()` cancels everything, stops the batch scheduler's thread and drops the model, so that
an engine that is swapped out or shut down frees its memory.

Two ways to decode, one result. Families whose caches can be merged row by row (the family
table says so) decode in batches: requests that arrive while others are decoding join the
running batch at the next step (`engine.batching`), up to `BatchLimits`. Other families run
one request at a time through `model.generate`, in a worker thread holding the model's FIFO
lock. Either way an `AnswerTracker` turns the new tokens into events, counts them per phase,
and says when the thinking budget is spent: then a short cue to conclude plus the closing tag
is fed to the model and it continues with the answer, one stream to the caller.

LoRA adapters given at construction are attached at load time; each request names the adapter
to use, or None for the base model, and the worker switches to it before generating.

Failures inside the worker end the stream with a "done" event whose finish reason is "error":
running out of GPU memory frees what the request held and says so (the next request may
work), a `StudioError` passes its message on, anything else is logged with its traceback and
reported as a generic failure. Family quirks (prompt style, how control tokens in user text are
neutralised, image limits) come from `engine.families`, never from the family name; prompts
are built by `engine.prompts`.

This module knows nothing of the UI or the database.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from engine.adapters import AdapterSwitch
from engine.batching import BatchJob, BatchLimits, BatchScheduler
from engine.decoding import OPEN_TAG, AnswerTracker, Emit, TokenTap
from engine.errors import (
    ENGINE_CLOSED_MESSAGE,
    EngineClosed,
    ModelNotReady,
    OutOfMemory,
    RequestError,
    StudioError,
)
from engine.families import Family
from engine.fifo import FifoLock, Ticket
from engine.images import ImagePolicy
from engine.loading import LoadProgress, LoadReport, Quantize, load_model
from engine.memory import (
    OUT_OF_MEMORY_MESSAGE,
    failure_message,
    is_out_of_memory,
    release_memory,
)
from engine.prompt_inputs import extend_inputs, pad_id
from engine.prompts import Prompts
from engine.requests import check_request
from engine.sampling import Decoding, pick_seed, resolve
from engine.scoring import answer_ids, score_tokens
from engine.thinking import ThinkingMode, thinking_mode, thinking_on
from engine.types import (
    Capabilities,
    Event,
    GenerationRequest,
    Message,
    Sampling,
    Score,
    Stats,
)

__all__ = ["OUT_OF_MEMORY_MESSAGE", "LocalEngine"]

log = logging.getLogger(__name__)

# Tokens kept free of images in the context: the questions and an answer need room too.
ANSWER_ROOM_TOKENS = 512


class LocalEngine:
    """A transformers model in this process. `load()` is explicit and may run in a thread."""

    def __init__(
        self,
        model_ref: str,
        *,
        quantize: Quantize = "auto",
        device: str | None = None,
        cache_dir: Path | None = None,
        max_new_tokens_limit: int = 4096,
        max_waiting: int = 64,
        max_images: int | None = None,
        adapters: Mapping[str, str | Path] | None = None,
        batch_limits: BatchLimits | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self._model_ref = model_ref
        self.quantize = quantize
        self.device = device
        self.cache_dir = cache_dir
        self.max_new_tokens_limit = max_new_tokens_limit
        self.max_images_override = max_images
        # The pixel budget images are scaled to before they reach the model (--max-pixels):
        # what one image costs in tokens, and so how many fit in the context, follows from it.
        self.max_pixels = max_pixels or ImagePolicy().max_pixels
        self._image_tokens = 0
        # Adapter name -> folder written by PEFT's save_pretrained.
        self.adapters = dict(adapters or {})
        self.model = None
        self.processor = None
        self.family: Family | None = None
        self.report: LoadReport | None = None
        self._adapter_switch: AdapterSwitch | None = None
        self._progress = LoadProgress("resolving", f"Waiting to load {model_ref}")
        self._load_error: str | None = None
        self._closed = False
        self._ready = threading.Event()
        self.max_waiting = max_waiting
        # max_batch_size 1 turns batching off: one request at a time through `generate`.
        self.batch_limits = batch_limits or BatchLimits()
        self._scheduler: BatchScheduler | None = None
        self._lock = FifoLock(max_waiting)
        self._tickets: dict[str, Ticket] = {}
        self._supports_thinking = False
        self._thinking_mode: ThinkingMode = "never"
        self._thinking_default = False
        self._prompts: Prompts | None = None

    # -- loading -------------------------------------------------------------------------

    @property
    def model_ref(self) -> str:
        return self._model_ref

    @property
    def load_error(self) -> str | None:
        return self._load_error

    @property
    def progress(self) -> LoadProgress:
        return self._progress

    @property
    def concurrency(self) -> int:
        """How many requests to let run at once: the batch size (`--max-batch`; 1 turns
        batching off). It is read before the model is loaded, so it is the setting, not what
        the family can do: a family that cannot batch serves that many one at a time, the
        others waiting in line here, where `queue_position` sees them."""
        return self.batch_limits.max_batch_size

    @property
    def batching(self) -> bool:
        """True once a model is loaded that decodes requests in batches."""
        return self._scheduler is not None

    @property
    def peak_batch_size(self) -> int:
        """The largest batch decoded so far (1 when requests run one at a time)."""
        return self._scheduler.peak_batch_size if self._scheduler is not None else 1

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._closed

    def load(self) -> LoadReport:
        """Load the model (blocking). On failure the message is kept in `load_error` and raised:
        a `StudioError`'s own words, or the type and text of anything else."""
        self._check_open()

        def progress(update: LoadProgress) -> None:
            self._progress = update

        try:
            self.model, self.processor, self.family, self.report = load_model(
                self._model_ref, quantize=self.quantize, device=self.device,
                cache_dir=self.cache_dir, progress=progress, adapters=self.adapters,
            )
        except Exception as exc:
            message = str(exc) if isinstance(exc, StudioError) else f"{type(exc).__name__}: {exc}"
            self._load_error = message
            self._progress = LoadProgress("failed", message)
            raise
        if self._closed:  # closed while loading: nothing may keep the model now
            self.model = self.processor = None
            raise EngineClosed(ENGINE_CLOSED_MESSAGE)
        self._thinking_mode, self._thinking_default = self._detect_thinking()
        self._supports_thinking = self._thinking_mode != "never"
        self._prompts = Prompts(self.processor, self.family,
                                thinking_switch=self._supports_thinking, device=self.model.device)
        self._image_tokens = self._tokens_per_image()
        self._adapter_switch = AdapterSwitch(self.model, self.report.adapters)
        if self.family.batch_positions and self.batch_limits.max_batch_size > 1:
            tokenizer = self.processor.tokenizer
            self._scheduler = BatchScheduler(
                self.model, limits=self.batch_limits, positions=self.family.batch_positions,
                pad_token_id=pad_id(tokenizer), exclusive=self._lock,
                activate_adapter=self._adapter_switch.activate, max_waiting=self.max_waiting)
        self._ready.set()
        return self.report

    def close(self) -> None:
        """Cancel every request, stop the batch scheduler's thread and drop the model, so that
        nothing here keeps it alive. Later calls raise `EngineClosed`; closing again does
        nothing."""
        if self._closed:
            return
        self._closed = True
        for ticket in list(self._tickets.values()):
            ticket.cancelled.set()
        if self._scheduler is not None:
            self._scheduler.stop()
        # A request decoding through `generate` stops at its next token once cancelled; the
        # model is dropped only after it has let go of the lock.
        with self._lock.hold(Ticket("close"), bounded=False):
            self._scheduler = None
            self._adapter_switch = None
            self.model = None
            self.processor = None
        self._progress = LoadProgress("failed", ENGINE_CLOSED_MESSAGE)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed(ENGINE_CLOSED_MESSAGE)

    def _detect_thinking(self) -> tuple[ThinkingMode, bool]:
        """Thinking as the checkpoint's chat template does it (never, switchable, always)."""
        if (self.family.prompt_style != "chat"
                or not getattr(self.processor, "chat_template", None)):
            return "never", False
        question = [{"role": "user", "content": [{"type": "text", "text": "Hi?"}]}]

        def render(kwargs: dict) -> str:
            return self.processor.apply_chat_template(
                question, add_generation_prompt=True, tokenize=False, **kwargs)

        return thinking_mode(render, OPEN_TAG)

    def _tokens_per_image(self) -> int:
        """Prompt tokens one image at the pixel budget costs, measured with the processor
        (the largest over a square and a wide image: tiling processors cost more for some
        shapes). 0 when it cannot be measured."""
        from PIL import Image

        side = math.isqrt(self.max_pixels)
        wide = (math.isqrt(self.max_pixels * 16 // 9), math.isqrt(self.max_pixels * 9 // 16))
        question = Message("user", "Hi?")
        try:
            plain = self._build_inputs((question,), False)[0]["input_ids"].shape[1]
            costs = []
            for size in ((side, side), wide):
                with_image = Message("user", "Hi?", (Image.new("RGB", size, (127, 127, 127)),))
                inputs = self._build_inputs((with_image,), False)[0]
                costs.append(int(inputs["input_ids"].shape[1]) - plain)
        except Exception:  # a processor that cannot take this shape: no limit from costs
            log.exception("could not measure what an image costs in tokens")
            return 0
        return max(0, *costs)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout) and not self._closed

    def quota_note(self) -> str | None:
        return None

    def capabilities(self) -> Capabilities:
        self._check_open()
        if not self.ready:
            raise ModelNotReady(self._not_ready_message())
        config = self.model.config
        text_config = getattr(config, "text_config", None) or config
        context_length = int(getattr(text_config, "max_position_embeddings", 0) or 0)
        max_images = self._set_image_limit()
        if context_length and self._image_tokens:
            # Images at the pixel budget, plus room for the questions and an answer.
            fitting = (context_length - ANSWER_ROOM_TOKENS) // self._image_tokens
            max_images = max(1, min(max_images, fitting))
        return Capabilities(
            model_id=self._model_ref,
            family=self.family.name,
            thinking=self._supports_thinking,
            thinking_mode=self._thinking_mode,
            thinking_default=self._thinking_default,
            multi_image=max_images > 1,
            max_images=max_images,
            context_length=context_length,
            image_tokens=self._image_tokens,
            thinking_budget=self._supports_thinking,
            adapters=self.report.adapters,
            quantization=self.report.quantization,
            revision=self.report.revision,
        )

    def _set_image_limit(self) -> int:
        """The family's image limit, lowered by the engine's setting if any."""
        if self.max_images_override is not None:
            return min(self.family.max_images, self.max_images_override)
        return self.family.max_images

    def _not_ready_message(self) -> str:
        return self._progress.not_ready_message(self._load_error)

    # -- serving -------------------------------------------------------------------------

    def queue_position(self, request_id: str) -> int | None:
        if self._scheduler is not None:
            return self._scheduler.position(request_id)
        return self._lock.position(request_id)

    def cancel(self, request_id: str) -> None:
        ticket = self._tickets.get(request_id)
        if ticket is not None:
            ticket.cancelled.set()

    @contextmanager
    def holding_model(self, messages: tuple[Message, ...], adapter: str | None = None, *,
                      thinking: bool = False):
        """The model to oneself, in turn with generation requests, for work other than
        generating (scoring answers): checks `messages` like a request, activates `adapter`
        (None: the base model) and yields the processor inputs for `messages`. Running out of
        GPU memory inside frees what it can and raises OutOfMemory."""
        self._validate(GenerationRequest(messages=tuple(messages), adapter=adapter))
        ticket = Ticket(f"hold-{random.getrandbits(64):016x}")
        try:
            with self._lock.hold(ticket):
                self._adapter_switch.activate(adapter)
                inputs, _ = self._build_inputs(tuple(messages), thinking)
                yield inputs
        except BaseException as error:
            if is_out_of_memory(error):
                release_memory(error)
                raise OutOfMemory(OUT_OF_MEMORY_MESSAGE) from None
            raise

    def score_answers(self, messages: tuple[Message, ...], answers: Sequence[str],
                      adapter: str | None = None) -> list[Score]:
        """Scores of each of `answers` as the reply to `messages` (`engine.scoring`), all under
        one hold of the model."""
        with self.holding_model(tuple(messages), adapter) as inputs:
            return [score_tokens(self.model, inputs, self.answer_ids(answer))
                    for answer in answers]

    def answer_ids(self, answer: str) -> list[int]:
        """The tokens scoring reads for `answer`: as the model writes it, then the token it
        ends answers with."""
        return answer_ids(self.processor.tokenizer, answer, end_id=self.end_of_answer_id(),
                          question_answer=self.family.prompt_style == "question_answer")

    def stream(self, request: GenerationRequest) -> Iterator[Event]:
        """Yield events for one request. Refused requests raise a StudioError before any event."""
        out: queue.Queue = queue.Queue()
        self.submit(request, out.put)
        return self._relay(request.request_id, out)

    def _relay(self, request_id: str, out: queue.Queue) -> Iterator[Event]:
        finished = False
        try:
            while not finished:
                event = out.get()
                finished = event.kind == "done"
                yield event
        finally:
            if not finished:  # the caller went away: stop generating for nobody
                self.cancel(request_id)

    def submit(self, request: GenerationRequest, emit: Emit) -> None:
        """Start one request; its events go to `emit`, called from the thread that decodes it
        (no relay thread between the model and the caller), the last one "done". Refused
        requests raise a StudioError here, before any work. `stream` is this with a queue;
        `engine.process` passes each event to a pipe."""
        self._check_open()
        if not self.ready:
            raise ModelNotReady(self._not_ready_message())
        self._validate(request)
        ticket = Ticket(request.request_id)
        self._tickets[request.request_id] = ticket
        self._run(request, ticket, emit)

    def _validate(self, request: GenerationRequest) -> None:
        caps = self.capabilities()
        image_count = sum(len(m.images) for m in request.messages)
        if image_count > caps.max_images and caps.max_images < self._set_image_limit():
            raise RequestError(
                f"This conversation has {image_count} images, more than the "
                f"{caps.max_images} this model can read with room to answer: each image costs "
                f"about {caps.image_tokens} tokens of its {caps.context_length}-token context. "
                "Start a new conversation for more images.")
        image_count = check_request(request, caps.max_images)
        if image_count == 0 and self.family.needs_image:
            raise RequestError(
                "This model only answers questions about an image: add one to the conversation.")
        if request.adapter is not None and request.adapter not in caps.adapters:
            loaded = ", ".join(caps.adapters) or "none"
            raise RequestError(
                f"No adapter named {request.adapter!r} is loaded (loaded: {loaded}). "
                "Pick one of those, or the base model.")

    def _run(self, request: GenerationRequest, ticket: Ticket, emit: Emit) -> None:
        # A worker thread (or the batch scheduler), never the caller, holds the model: a caller
        # that stops reading events (a closed tab) cannot keep it forever. Times count from
        # here, so waiting in line is in the TTFT.
        started = time.perf_counter()
        seed = pick_seed(request.sampling.seed)
        state: dict = {}

        def finished(stats: Stats | None, message: str | None) -> None:
            self._tickets.pop(request.request_id, None)
            if message:
                emit(self._error_event(message, state.get("tracker"), seed, started))
            else:
                emit(Event("done", stats=stats))

        def work() -> None:
            try:
                scheduler = self._scheduler  # read once: `close` may drop it meanwhile
                if scheduler is not None:
                    scheduler.submit(self._batch_job(request, seed, ticket.cancelled, emit,
                                                     state, started, finished))
                    return  # the scheduler calls `finished`
                with self._lock.hold(ticket) as acquired:
                    if acquired:
                        stats = self._generate(request, seed, ticket.cancelled, emit, state,
                                               started)
                    else:
                        stats = Stats(finish_reason="cancelled", seed=seed)
            except BaseException as exc:  # reported to the caller, never lost in a thread
                if is_out_of_memory(exc):
                    # Here, not in the caller: a caller that went away would otherwise leave
                    # the memory held until the next request.
                    release_memory(exc)
                finished(None, failure_message(exc))
                return
            finished(stats, None)

        threading.Thread(target=work, name=f"generate-{request.request_id[:8]}",
                         daemon=True).start()

    def _error_event(self, message: str, tracker: AnswerTracker | None, seed: int,
                     started: float) -> Event:
        if tracker is not None:
            stats = tracker.stats(seed=seed, finish_reason="error")
        else:
            stats = Stats(duration_s=time.perf_counter() - started, finish_reason="error",
                          seed=seed)
        return Event("done", stats=stats, error=message)

    def _build_inputs(self, messages: tuple[Message, ...], thinking: bool):
        return self._prompts.build(messages, thinking)

    def _prepare(self, request: GenerationRequest, emit: Emit, started: float):
        """Inputs, new-token limit and answer tracker of one request, for either decoding path."""
        import torch

        max_new = max(1, min(request.sampling.max_new_tokens, self.max_new_tokens_limit))
        thinking = thinking_on(self._thinking_mode, request.thinking)
        budget = request.thinking_budget if thinking else None
        inputs, prompt_text = self._build_inputs(request.messages, thinking)
        context = self.capabilities().context_length
        prompt_tokens = inputs["input_ids"].shape[1]
        if context and prompt_tokens >= context:
            raise RequestError(
                f"This conversation is too long for the model ({prompt_tokens} tokens; it reads "
                f"at most {context}). Start a new conversation or use fewer images.")
        if context:
            max_new = min(max_new, context - prompt_tokens)
        # One answer may take the whole of a batch's budget, and no more: a question of a
        # megabyte would otherwise hold the model for minutes, reading it in one step that
        # nothing interrupts.
        most = self.batch_limits.max_batch_tokens
        if prompt_tokens >= most:
            raise RequestError(
                f"This question is too long for this server ({prompt_tokens} tokens with the "
                f"conversation before it; it takes at most {most}). Shorten it, start a new "
                "conversation or use fewer images.")
        max_new = min(max_new, most - prompt_tokens)
        prefilled = prompt_text.rstrip().endswith(OPEN_TAG)
        tracker = AnswerTracker(self.processor.tokenizer, emit, prefilled=prefilled,
                                budget=budget, started=started, eos_ids=self.eos_ids())
        if tracker.budget_spent:
            # A budget of 0 after a prompt that opens the reasoning: no room to think at all,
            # so the prompt ends with the cue to conclude.
            cue = torch.tensor([tracker.budget_cue(max_new)], device=inputs["input_ids"].device)
            inputs = extend_inputs(inputs, torch.cat([inputs["input_ids"], cue], dim=1))
        return inputs, max_new, tracker

    def _batch_job(self, request: GenerationRequest, seed: int, cancelled: threading.Event,
                   emit: Emit, state: dict, started: float, finished) -> BatchJob:
        inputs, max_new, tracker = self._prepare(request, emit, started)
        state["tracker"] = tracker
        return BatchJob(request_id=request.request_id, inputs=inputs, max_new=max_new,
                        decoding=self.decoding(request.sampling), seed=seed,
                        adapter=request.adapter,
                        tracker=tracker, cancelled=cancelled, finished=finished)

    def _generate(self, request: GenerationRequest, seed: int, cancelled: threading.Event,
                  emit: Emit, state: dict, started: float) -> Stats:
        import torch

        self._adapter_switch.activate(request.adapter)
        inputs, max_new, tracker = self._prepare(request, emit, started)
        state["tracker"] = tracker
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        generation = self._generation_kwargs(request.sampling)
        prompt_length = inputs["input_ids"].shape[1]
        output_ids = self._call_generate(inputs, TokenTap(tracker, prompt_length, cancelled),
                                         max_new, generation)
        # The budget is spent while the model is still reasoning: cue it to conclude, close the
        # reasoning, and let it answer with the tokens that are left.
        if tracker.budget_spent and not cancelled.is_set():
            remaining = max_new - tracker.generated
            cue_ids = tracker.budget_cue(max_new)
            if cue_ids:
                cue = torch.tensor([cue_ids], device=output_ids.device)
                continued = extend_inputs(inputs, torch.cat([output_ids, cue], dim=1))
                tap = TokenTap(tracker, continued["input_ids"].shape[1], cancelled)
                self._call_generate(continued, tap, remaining, generation)
        tracker.finish()
        return tracker.stats(
            seed=seed, finish_reason="cancelled" if cancelled.is_set() else None,
            max_new=max_new)

    def _call_generate(self, inputs, tap: TokenTap, max_new: int, generation: dict):
        import torch
        from transformers import StoppingCriteriaList

        with torch.inference_mode():
            return self.model.generate(
                **inputs, max_new_tokens=max_new, stopping_criteria=StoppingCriteriaList([tap]),
                **generation)

    def decoding(self, sampling: Sampling) -> Decoding:
        """The request's sampling settings over the checkpoint's generation config."""
        return resolve(sampling, self.model.generation_config)

    def _generation_kwargs(self, sampling: Sampling) -> dict:
        tokenizer = self.processor.tokenizer
        # The same pad id as the batch scheduler's: `or` would turn a pad id of 0 into eos.
        kwargs: dict = {"pad_token_id": pad_id(tokenizer)}
        kwargs.update(self.decoding(sampling).generate_kwargs())
        return kwargs

    def end_of_answer_id(self) -> int:
        """The token the model ends an answer with: the first of its generation config's
        end-of-sequence ids (Qwen: <|im_end|>; BLIP-2: a newline), else the tokenizer's."""
        eos = self.model.generation_config.eos_token_id
        if isinstance(eos, (list, tuple)) and eos:
            return int(eos[0])
        if isinstance(eos, int):
            return eos
        return int(self.processor.tokenizer.eos_token_id)

    def eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        if isinstance(eos, int):
            return {eos}
        return set(eos or ())
