"""The in-process engine: one transformers model, shared by every caller, one request at a time.

Contract (shared with the remote engine): `stream(request)` yields reasoning / answer deltas
and then one "done" event with `Stats`; `cancel(request_id)` stops that request, waiting or
running. Requests run first come, first served; `queue_position(request_id)` tells a waiting
caller where it stands. Closing the stream iterator (a closed browser tab) cancels too.

Generation runs in a worker thread. A stopping criterion ("tap") sees every new token inside
`generate`: it decodes, splits reasoning from answer, counts tokens per phase, and stops
generation when the request is cancelled or its thinking budget is spent. When the budget runs
out while the model is still reasoning, a short cue to conclude plus the closing tag is
appended and generation continues for the answer: one stream to the caller across both phases.

LoRA adapters given at construction are attached at load time; each request names the adapter
to use, or None for the base model, and the worker switches to it before generating.

Failures inside the worker end the stream with a "done" event whose finish reason is "error":
running out of GPU memory frees what the request held and says so (the next request may
work), a `StudioError` passes its message on, anything else is logged with its traceback and
reported as a generic failure. Family quirks (prompt style, how control tokens in user text are
neutralised, image limits) come from `engine.families`, never from the family name.

This module knows nothing of the UI or the database.
"""

from __future__ import annotations

import gc
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from engine.adapters import AdapterSwitch
from engine.errors import EngineBusy, ModelNotReady, OutOfMemory, RequestError, StudioError
from engine.families import Family
from engine.loading import LoadProgress, LoadReport, Quantize, load_model
from engine.requests import check_request
from engine.thinking import ThinkingParser
from engine.types import Capabilities, Event, GenerationRequest, Message, Stats

log = logging.getLogger(__name__)

OPEN_TAG, CLOSE_TAG = "<think>", "</think>"
# Appended when the thinking budget runs out: the model is told to stop reasoning and answer
# from what it has, then the reasoning is closed so the answer follows.
CONCLUDE_CUE = "\n\nTime is up: I will answer now with what I have worked out so far.\n"
OUT_OF_MEMORY_MESSAGE = (
    "The GPU ran out of memory for this request. Try fewer or smaller images, a lower max new "
    "tokens, or a shorter conversation."
)


@dataclass
class _Ticket:
    request_id: str
    cancelled: threading.Event = field(default_factory=threading.Event)


class _FifoLock:
    """A lock granted in arrival order, whose waiters can be counted, cancelled and bounded."""

    def __init__(self, max_waiting: int) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[_Ticket] = deque()
        self._holder: _Ticket | None = None
        self.max_waiting = max_waiting

    def position(self, request_id: str) -> int | None:
        """0 while running, 1.. while waiting (1 = next), None when unknown."""
        with self._cond:
            if self._holder is not None and self._holder.request_id == request_id:
                return 0
            for index, ticket in enumerate(self._waiting):
                if ticket.request_id == request_id:
                    return index + 1
        return None

    @contextmanager
    def hold(self, ticket: _Ticket):
        with self._cond:
            if self.max_waiting and len(self._waiting) >= self.max_waiting:
                raise EngineBusy(
                    f"The model is busy: {len(self._waiting)} requests are already waiting. "
                    "Please try again in a minute."
                )
            self._waiting.append(ticket)
            while self._holder is not None or self._waiting[0] is not ticket:
                if ticket.cancelled.is_set():
                    break
                self._cond.wait(timeout=0.1)
            self._waiting.remove(ticket)
            acquired = not ticket.cancelled.is_set()
            if acquired:
                self._holder = ticket
            self._cond.notify_all()
        try:
            yield acquired
        finally:
            if acquired:
                with self._cond:
                    self._holder = None
                    self._cond.notify_all()


class _Tap:
    """Stopping criterion that turns generated token ids into events as `generate` makes them.

    Runs on the generation thread. Pushes events to `out` and keeps per-phase counts.
    """

    def __init__(self, tokenizer, prompt_length: int, parser: ThinkingParser, out: queue.Queue,
                 cancelled: threading.Event, budget: int | None, started: float) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.parser = parser
        self.out = out
        self.cancelled = cancelled
        self.budget = budget
        self.started = started
        self.ids: list[int] = []
        self.reasoning_tokens = 0
        self.answer_tokens = 0
        self.first_token_at: float | None = None
        self.budget_hit = False
        self.special_ids = set(tokenizer.all_special_ids)
        # Incremental detokenization: decode a short window so multi-byte characters split
        # across tokens come out whole, without re-decoding the whole answer every step.
        self._prefix_offset = 0
        self._read_offset = 0

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[0, self.prompt_length + len(self.ids):].tolist()
        for token_id in new:
            self._take(token_id)
        stop = self.cancelled.is_set() or self.budget_hit
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    def _take(self, token_id: int) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self.parser.in_reasoning:
            self.reasoning_tokens += 1
        else:
            self.answer_tokens += 1
        self.ids.append(token_id)
        if token_id not in self.special_ids:
            self._emit(self._decode_delta())
        if (self.budget is not None and self.parser.in_reasoning
                and self.reasoning_tokens >= self.budget):
            self.budget_hit = True

    def _decode_delta(self) -> str:
        ids = [i for i in self.ids if i not in self.special_ids]
        prefix = self.tokenizer.decode(ids[self._prefix_offset:self._read_offset])
        text = self.tokenizer.decode(ids[self._prefix_offset:])
        if text.endswith("\ufffd"):
            return ""  # an incomplete character: wait for the next token
        self._prefix_offset, self._read_offset = self._read_offset, len(ids)
        return text[len(prefix):]

    def _emit(self, delta: str) -> None:
        if delta:
            for kind, text in self.parser.feed(delta):
                self.out.put(Event(kind, text))

    def flush(self) -> None:
        for kind, text in self.parser.flush():
            self.out.put(Event(kind, text))


class _AnswerOnly:
    """Parser for the text after a forced conclusion: all of it is answer, tags included."""

    in_reasoning = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        return [("answer", text)] if text else []

    def flush(self) -> list[tuple[str, str]]:
        return []


_DONE = object()


def extend_inputs(inputs, input_ids) -> dict:
    """Processor outputs for a longer prompt that keeps the same images.

    Per-token tensors (attention mask, token type ids, multimodal token types) are extended
    for the appended text tokens; image tensors are reused as they are.
    """
    import torch

    prompt_length = inputs["input_ids"].shape[1]
    added = input_ids.shape[1] - prompt_length
    extended = {}
    for key, value in inputs.items():
        per_token = (isinstance(value, torch.Tensor) and value.dim() == 2
                     and value.shape[1] == prompt_length and not key.startswith(("pixel", "image")))
        if key == "input_ids":
            extended[key] = input_ids
        elif per_token:
            fill = 1 if key == "attention_mask" else 0
            pad = torch.full((value.shape[0], added), fill, dtype=value.dtype, device=value.device)
            extended[key] = torch.cat([value, pad], dim=1)
        else:
            extended[key] = value
    return extended


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
    ) -> None:
        self.model_ref = model_ref
        self.quantize = quantize
        self.device = device
        self.cache_dir = cache_dir
        self.max_new_tokens_limit = max_new_tokens_limit
        self.max_images_override = max_images
        # Adapter name -> folder written by PEFT's save_pretrained.
        self.adapters = dict(adapters or {})
        self.model = None
        self.processor = None
        self.family: Family | None = None
        self.report: LoadReport | None = None
        self._adapter_switch: AdapterSwitch | None = None
        self.progress = LoadProgress("resolving", f"Waiting to load {model_ref}")
        self.load_error: str | None = None
        self._ready = threading.Event()
        self._lock = _FifoLock(max_waiting)
        self._tickets: dict[str, _Ticket] = {}
        self._supports_thinking = False
        self._sanitize_control_tokens = True

    # -- loading -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> LoadReport:
        """Load the model (blocking). On failure the message is kept in `load_error` and raised."""
        def progress(update: LoadProgress) -> None:
            self.progress = update

        try:
            self.model, self.processor, self.family, self.report = load_model(
                self.model_ref, quantize=self.quantize, device=self.device,
                cache_dir=self.cache_dir, progress=progress, adapters=self.adapters,
            )
        except StudioError as exc:
            self.load_error = str(exc)
            self.progress = LoadProgress("failed", str(exc))
            raise
        template = getattr(self.processor, "chat_template", None) or ""
        self._supports_thinking = "enable_thinking" in template
        self._sanitize_control_tokens = self.family.sanitize_control_tokens
        self._adapter_switch = AdapterSwitch(self.model, self.report.adapters)
        self._ready.set()
        return self.report

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def capabilities(self) -> Capabilities:
        if not self.ready:
            raise ModelNotReady(self._not_ready_message())
        config = self.model.config
        text_config = getattr(config, "text_config", None) or config
        max_images = self.family.max_images
        if self.max_images_override is not None:
            max_images = min(max_images, self.max_images_override)
        return Capabilities(
            model_id=self.model_ref,
            family=self.family.name,
            thinking=self._supports_thinking,
            multi_image=max_images > 1,
            max_images=max_images,
            context_length=int(getattr(text_config, "max_position_embeddings", 0) or 0),
            thinking_budget=self._supports_thinking,
            adapters=self.report.adapters,
            quantization=self.report.quantization,
            revision=self.report.revision,
        )

    def _not_ready_message(self) -> str:
        if self.load_error:
            return f"The model could not be loaded: {self.load_error}"
        p = self.progress
        if p.stage == "downloading" and p.bytes_total:
            return (f"The model is still loading (downloading {p.bytes_done / 1e9:.2f} of "
                    f"{p.bytes_total / 1e9:.2f} GB). Please ask again in a moment.")
        return f"The model is still loading ({p.message}). Please ask again in a moment."

    # -- serving -------------------------------------------------------------------------

    def queue_position(self, request_id: str) -> int | None:
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
        ticket = _Ticket(f"hold-{random.getrandbits(64):016x}")
        try:
            with self._lock.hold(ticket):
                self._adapter_switch.activate(adapter)
                inputs, _ = self._build_inputs(tuple(messages), thinking)
                yield inputs
        except BaseException as error:
            if _is_out_of_memory(error):
                _release_memory(error)
                raise OutOfMemory(OUT_OF_MEMORY_MESSAGE) from None
            raise

    def stream(self, request: GenerationRequest) -> Iterator[Event]:
        """Yield events for one request. Refused requests raise a StudioError before any event."""
        if not self.ready:
            raise ModelNotReady(self._not_ready_message())
        self._validate(request)
        ticket = _Ticket(request.request_id)
        self._tickets[request.request_id] = ticket
        return self._run(request, ticket)

    def _validate(self, request: GenerationRequest) -> None:
        caps = self.capabilities()
        image_count = check_request(request, caps.max_images)
        if image_count == 0 and self.family.needs_image:
            raise RequestError(
                "This model only answers questions about an image: add one to the conversation.")
        if request.adapter is not None and request.adapter not in caps.adapters:
            loaded = ", ".join(caps.adapters) or "none"
            raise RequestError(
                f"No adapter named {request.adapter!r} is loaded (loaded: {loaded}). "
                "Pick one of those, or the base model.")

    def _run(self, request: GenerationRequest, ticket: _Ticket) -> Iterator[Event]:
        # The worker thread, not this generator, holds the model: a caller that stops pulling
        # events (a closed tab whose iterator is never resumed) cannot keep the lock forever.
        started = time.perf_counter()
        sampling = request.sampling
        seed = sampling.seed if sampling.seed is not None else random.randrange(2**31)
        out: queue.Queue = queue.Queue()
        state: dict = {"taps": []}

        def work() -> None:
            try:
                with self._lock.hold(ticket) as acquired:
                    if acquired:
                        self._generate(request, seed, ticket.cancelled, out, state)
                    else:
                        state["stats"] = Stats(finish_reason="cancelled", seed=seed)
            except BaseException as exc:  # reported to the caller below, never lost in a thread
                if _is_out_of_memory(exc):
                    # Here, not in the caller's generator: a caller that went away would
                    # otherwise leave the memory held until the next request.
                    _release_memory(exc)
                state["error"] = exc
            finally:
                self._tickets.pop(request.request_id, None)
                out.put(_DONE)

        worker = threading.Thread(target=work, name=f"generate-{request.request_id[:8]}",
                                  daemon=True)
        worker.start()
        finished = False
        try:
            while not finished:
                item = out.get()
                finished = item is _DONE
                if not finished:
                    yield item
        finally:
            if not finished:  # the caller went away: stop generating for nobody
                ticket.cancelled.set()

        error = state.get("error")
        if error is not None:
            yield self._error_event(error, state["taps"], seed, started)
        else:
            yield Event("done", stats=state["stats"])

    def _error_event(self, error: BaseException, taps: list[_Tap], seed: int,
                     started: float) -> Event:
        if _is_out_of_memory(error):
            log.warning("request ran out of GPU memory: %s", error)
            message = str(OutOfMemory(OUT_OF_MEMORY_MESSAGE))
        elif isinstance(error, StudioError):
            message = str(error)
        else:
            log.error("generation failed", exc_info=error)
            message = "The model failed while answering. The error was logged on the server."
        first = next((t.first_token_at for t in taps if t.first_token_at), None)
        stats = Stats(
            reasoning_tokens=sum(t.reasoning_tokens for t in taps),
            answer_tokens=sum(t.answer_tokens for t in taps),
            time_to_first_token_s=(first - started) if first else None,
            duration_s=time.perf_counter() - started, finish_reason="error", seed=seed,
        )
        return Event("done", stats=stats, error=message)

    def _build_inputs(self, messages: tuple[Message, ...], thinking: bool):
        if self.family.prompt_style == "question_answer":
            return self._question_answer_inputs(messages)
        template_kwargs = {"enable_thinking": thinking} if self._supports_thinking else {}
        # User text must not be able to write control tokens (a fake turn, an image
        # placeholder without an image). Templates that write special tokens let transformers
        # encode such text literally; for the others the tokens are removed from user text.
        sanitize = self._sanitize_control_tokens
        conversation = self._conversation(messages, scrub=not sanitize)
        prompt_text = self.processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False, **template_kwargs)
        try:
            # return_tensors is given twice on purpose: SmolVLM's processor warns on every call
            # unless processor_kwargs is non-empty; for the others it is the same setting.
            inputs = self.processor.apply_chat_template(
                conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                return_tensors="pt", processor_kwargs={"return_tensors": "pt"},
                sanitize_control_tokens=sanitize, **template_kwargs)
        except NotImplementedError:
            if not sanitize:
                raise
            self._sanitize_control_tokens = False
            return self._build_inputs(messages, thinking)
        return inputs.to(self.model.device), prompt_text

    def _control_tokens(self) -> list[str]:
        return [t.content for t in self.processor.tokenizer.added_tokens_decoder.values()
                if t.content.strip()]

    def _conversation(self, messages: tuple[Message, ...], scrub: bool) -> list[dict]:
        control = self._control_tokens() if scrub else []
        conversation = []
        for message in messages:
            text = _without(message.text, control)
            content = [{"type": "image", "image": image} for image in message.images]
            content.append({"type": "text", "text": text})
            conversation.append({"role": message.role, "content": content})
        return conversation

    def _question_answer_inputs(self, messages: tuple[Message, ...]):
        # Models without a chat template see earlier turns as plain Question/Answer lines.
        # Nothing encodes user text safely here, so control tokens (the image placeholder the
        # processor repeats per query token) are removed from it.
        control = self._control_tokens()
        lines = []
        for message in messages:
            text = _without(message.text, control).strip()
            if message.role == "user":
                lines.append(f"Question: {text}")
            elif message.role == "assistant":
                lines.append(f"Answer: {text}")
        prompt = " ".join(lines) + " Answer:"
        images = [image for m in messages for image in m.images]
        inputs = self.processor(images=images or None, text=prompt, return_tensors="pt")
        return inputs.to(self.model.device), prompt

    def _generate(self, request: GenerationRequest, seed: int, cancelled: threading.Event,
                  out: queue.Queue, state: dict) -> None:
        import torch

        started = time.perf_counter()
        sampling = request.sampling
        max_new = max(1, min(sampling.max_new_tokens, self.max_new_tokens_limit))
        thinking = request.thinking and self._supports_thinking
        budget = request.thinking_budget if thinking else None
        self._adapter_switch.activate(request.adapter)
        inputs, prompt_text = self._build_inputs(request.messages, thinking)
        prefilled = prompt_text.rstrip().endswith(OPEN_TAG)
        context = self.capabilities().context_length
        prompt_tokens = inputs["input_ids"].shape[1]
        if context and prompt_tokens >= context:
            raise RequestError(
                f"This conversation is too long for the model ({prompt_tokens} tokens; it reads "
                f"at most {context}). Start a new conversation or use fewer images.")
        if context:
            max_new = min(max_new, context - prompt_tokens)

        tokenizer = self.processor.tokenizer
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        generation = self._generation_kwargs(sampling)
        parser = ThinkingParser(OPEN_TAG, CLOSE_TAG, start_in_reasoning=prefilled)
        tap = _Tap(tokenizer, inputs["input_ids"].shape[1], parser, out, cancelled, budget,
                   started)
        state["taps"].append(tap)
        output_ids = inputs["input_ids"]
        if not (budget == 0 and prefilled):
            output_ids = self._call_generate(inputs, tap, max_new, generation)
        tap.flush()
        last = tap
        budget_exhausted = (budget is not None and parser.in_reasoning
                            and not cancelled.is_set() and (tap.budget_hit or budget == 0))
        remaining = max_new - len(tap.ids)
        # The budget is spent while the model is still reasoning: cue it to conclude, close the
        # reasoning, and let it answer with the tokens that are left.
        if budget_exhausted and remaining > 0:
            cue_ids = tokenizer(CONCLUDE_CUE + CLOSE_TAG + "\n\n", add_special_tokens=False,
                                return_tensors="pt")["input_ids"].to(output_ids.device)
            continued = extend_inputs(inputs, torch.cat([output_ids, cue_ids], dim=1))
            # After the cue everything the model writes is answer, whatever tags it emits.
            last = _Tap(tokenizer, continued["input_ids"].shape[1], _AnswerOnly(), out,
                        cancelled, None, started)
            state["taps"].append(last)
            self._call_generate(continued, last, remaining, generation)
            last.flush()

        taps = state["taps"]
        used = sum(len(t.ids) for t in taps)
        first = next((t.first_token_at for t in taps if t.first_token_at), None)
        if cancelled.is_set():
            finish = "cancelled"
        elif used >= max_new and not (last.ids and last.ids[-1] in self.eos_ids()):
            finish = "length"
        else:
            finish = "stop"
        state["stats"] = Stats(
            reasoning_tokens=tap.reasoning_tokens,
            answer_tokens=sum(t.answer_tokens for t in taps),
            time_to_first_token_s=(first - started) if first else None,
            duration_s=time.perf_counter() - started,
            finish_reason=finish,
            seed=seed,
            budget_exhausted=budget_exhausted,
        )

    def _call_generate(self, inputs, tap: _Tap, max_new: int, generation: dict):
        import torch
        from transformers import StoppingCriteriaList

        with torch.inference_mode():
            return self.model.generate(
                **inputs, max_new_tokens=max_new, stopping_criteria=StoppingCriteriaList([tap]),
                **generation)

    def _generation_kwargs(self, sampling) -> dict:
        tokenizer = self.processor.tokenizer
        kwargs: dict = {"pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
        if sampling.temperature and sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature,
                          top_p=sampling.top_p, top_k=sampling.top_k or None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.repetition_penalty and sampling.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = sampling.repetition_penalty
        return kwargs

    def eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        if isinstance(eos, int):
            return {eos}
        return set(eos or ())


def _without(text: str, tokens: list[str]) -> str:
    """`text` with every occurrence of `tokens` removed, including ones the removal creates."""
    # Removing "<|x|>" from "<im<|x|>age>" joins the rest into "<image>": repeat until stable.
    # Each pass that changes anything makes the text shorter, so this ends.
    changed = True
    while changed:
        changed = False
        for token in tokens:
            if token in text:
                text = text.replace(token, "")
                changed = True
    return text


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    # Allocation failures inside cuBLAS or bitsandbytes kernels arrive as plain RuntimeErrors.
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def _release_memory(error: BaseException) -> None:
    """Give back the GPU memory a failed request held."""
    import torch

    # The traceback's frames still reference the request's tensors (inputs, activations, the
    # KV cache); drop them before the allocator is asked to return its cached blocks.
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
