"""Training examples drawn from stored conversations, before any trainer's file format.

For every question (user message) of a conversation, looking only at its finished answers
(generated ones that stopped or hit the length limit, and user corrections):
- DPO pairs (chosen, rejected), all sharing the prompt "path from the first question down to
  this one, with the answers chosen along the way": an edit (the correction beats the answer
  it corrects), a pick (chosen beats other), and every liked x disliked pair of sibling
  answers. When one pair of answers is judged more than once, the latest judgement decides.
  Ties, "both bad", lone dislikes and regenerations alone make no pair.
- KTO labels: liked answers are desirable, disliked ones undesirable; "both bad" makes both
  undesirable; an edit makes the original undesirable and the correction desirable. The latest
  event about an answer decides its label.
- SFT demonstrations: liked answers and corrections (unless later disliked, or later
  corrected: then the correction is shown instead).
Votes are the latest per answer ("clear" withdraws one), pair verdicts the latest per pair,
edits the latest per corrected answer. Pairs with an empty side or two identical sides are
dropped and counted. Reasoning is left out unless `keep_reasoning`, which puts it before the
answer as "<think>...</think>"; assistant turns inside a prompt never carry reasoning.
Every text (questions, answers, corrections, reasoning) is kept from writing control tokens
(`control_tokens.without_control_tokens`) before an example is made, so examples, their
dedupe keys and every export format hold exactly the text a trainer will encode; the only
"<think>" tags left are the ones `keep_reasoning` writes.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from control_tokens import without_control_tokens
from storage.judgements import CurrentFeedback
from storage.records import Conversation, StoredMessage

Kind = Literal["dpo", "kto", "sft"]
KINDS: tuple[Kind, ...] = ("dpo", "kto", "sft")
# Answers that ended any other way (cancelled, interrupted, error) are never exported.
USABLE_FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str
    image_shas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Example:
    """One training example. `completion` is the chosen answer (DPO), the labelled answer
    (KTO) or the demonstrated answer (SFT); `prompt` ends with the user's question."""

    kind: Kind
    prompt: tuple[Turn, ...]
    completion: str
    source: str  # "edit", "pick", "votes", "like", "dislike", "both_bad"
    decided_at: str  # when the deciding feedback was given
    rejected: str | None = None  # DPO only
    label: bool | None = None  # KTO only: True = desirable
    # Where it came from: conversation, message and feedback ids, models and settings.
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def image_shas(self) -> tuple[str, ...]:
        return tuple(sha for turn in self.prompt for sha in turn.image_shas)

    @property
    def content_key(self) -> str:
        """Equal for examples with the same images, prompt and answers: the dedupe key."""
        content = [
            self.kind,
            [[turn.role, turn.text, list(turn.image_shas)] for turn in self.prompt],
            self.completion,
            self.rejected,
            self.label,
        ]
        return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.content_key[:20]}"

    @property
    def split_group(self) -> str:
        """Examples with the same group always land in the same split: the conversation's
        opening question, by its first image (by its text when it has none). A later turn's
        prompt holds the earlier turns whole, so every example of one conversation must go
        together, whatever images later turns add; so do conversations that open on the
        same picture."""
        opening = self.prompt[0]
        if opening.image_shas:
            return "image:" + opening.image_shas[0]
        return "text:" + opening.text


def in_eval_split(example: Example, eval_fraction: float) -> bool:
    digest = hashlib.sha256(example.split_group.encode()).hexdigest()
    return int(digest[:13], 16) / 16**13 < eval_fraction


def answer_text(message: StoredMessage, keep_reasoning: bool) -> str:
    text = without_control_tokens(message.text)
    reasoning = without_control_tokens(message.reasoning).strip() if keep_reasoning else ""
    if reasoning:
        return f"<think>\n{reasoning}\n</think>\n\n{text}"
    return text


def _no_answer(message: StoredMessage) -> bool:
    """Nothing said after the reasoning (an answer cut off while thinking): whether or not the
    reasoning is kept, there is no answer to learn from."""
    return not without_control_tokens(message.text).strip()


def _usable(message: StoredMessage) -> bool:
    if message.role != "assistant" or message.status != "done":
        return False
    if message.origin == "edit":
        return True
    return message.stats is not None and message.stats.finish_reason in USABLE_FINISH_REASONS


@dataclass
class _Decision:
    at: str
    feedback_ids: tuple[str, ...]
    source: str


@dataclass
class _PairDecision(_Decision):
    chosen_id: str = ""
    rejected_id: str = ""


@dataclass
class _LabelDecision(_Decision):
    desirable: bool = True


def conversation_examples(
    conversation: Conversation, *, keep_reasoning: bool = False
) -> tuple[list[Example], Counter[str]]:
    """Every example the conversation yields, and how many candidates were dropped why."""
    by_id = {message.id: message for message in conversation.messages}
    state = CurrentFeedback(conversation.feedback)
    examples: list[Example] = []
    dropped: Counter[str] = Counter()
    for question in conversation.messages:
        if question.role != "user":
            continue
        answers = [m for m in conversation.children(question.id) if _usable(m)]
        if not answers:
            continue
        path = conversation.path(question.id)
        prompt = tuple(
            Turn("user", without_control_tokens(m.text), m.image_shas)
            if m.role == "user"
            else Turn("assistant", without_control_tokens(m.text))
            for m in path
        )
        context = _Context(conversation, question, path, prompt, by_id, keep_reasoning)
        examples += _pairs(context, answers, state, dropped)
        examples += _labels(context, answers, state, dropped)
        examples += _demonstrations(context, answers, state, dropped)
    return examples, dropped


@dataclass
class _Context:
    conversation: Conversation
    question: StoredMessage
    path: list[StoredMessage]
    prompt: tuple[Turn, ...]
    by_id: dict[str, StoredMessage]
    keep_reasoning: bool

    def text(self, message: StoredMessage) -> str:
        return answer_text(message, self.keep_reasoning)

    def provenance(self, decision: _Decision, roles: dict[str, str]) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation.id,
            "consent_version": self.conversation.consent_version,
            "question_id": self.question.id,
            "prompt_message_ids": [m.id for m in self.path],
            "message_ids": roles,
            "feedback_ids": list(decision.feedback_ids),
            "answers": {
                message_id: answer_provenance(self.by_id[message_id], self.by_id)
                for message_id in roles.values()
            },
        }


def answer_provenance(message: StoredMessage, by_id: Mapping[str, StoredMessage]) -> dict[str, Any]:
    """How an answer came to be. A correction reports the generation it corrects."""
    generated = generated_origin(message, by_id)
    meta = generated.meta if generated is not None else None
    return {
        "origin": message.origin,
        "corrects_id": message.corrects_id,
        "model_id": meta.model_id if meta else None,
        "revision": meta.revision if meta else None,
        "quantization": meta.quantization if meta else None,
        "adapter": meta.adapter if meta else None,
        "thinking": meta.thinking if meta else None,
        "thinking_budget": meta.thinking_budget if meta else None,
        "sampling": dict(meta.sampling) if meta else None,
        "seed": meta.seed if meta else None,
        "finish_reason": generated.stats.finish_reason if generated and generated.stats else None,
    }


def generated_origin(
    message: StoredMessage, by_id: Mapping[str, StoredMessage]
) -> StoredMessage | None:
    """The model-written answer behind a message (itself, or what a chain of edits corrects)."""
    seen = set()
    current: StoredMessage | None = message
    while current is not None and current.origin == "edit" and current.id not in seen:
        seen.add(current.id)
        current = by_id.get(current.corrects_id or "")
    return current if current is not None and current.origin == "generated" else None


def _pairs(
    context: _Context, answers: list[StoredMessage], state: CurrentFeedback, dropped: Counter[str]
) -> list[Example]:
    usable = {m.id for m in answers}
    decisions: dict[frozenset[str], _PairDecision] = {}

    def consider(decision: _PairDecision) -> None:
        key = frozenset((decision.chosen_id, decision.rejected_id))
        if key not in decisions or decision.at >= decisions[key].at:
            decisions[key] = decision

    for original_id, edit in state.edits.items():
        if original_id in usable and edit.edit_message_id in usable:
            consider(
                _PairDecision(
                    edit.created_at, (edit.id,), "edit", edit.edit_message_id, original_id
                )
            )
    for pair, verdict in state.pairs.items():
        if verdict.kind == "pick" and pair <= usable:
            consider(
                _PairDecision(
                    verdict.created_at,
                    (verdict.id,),
                    "pick",
                    verdict.message_id,
                    verdict.other_message_id or "",
                )
            )
    liked = [m.id for m in answers if state.vote(m.id) == "like"]
    disliked = [m.id for m in answers if state.vote(m.id) == "dislike"]
    for good in liked:
        for bad in disliked:
            votes = (state.votes[good], state.votes[bad])
            consider(
                _PairDecision(
                    max(v.created_at for v in votes), tuple(v.id for v in votes), "votes", good, bad
                )
            )

    examples = []
    for decision in decisions.values():
        sides = context.by_id[decision.chosen_id], context.by_id[decision.rejected_id]
        if any(_no_answer(side) for side in sides):
            dropped["dpo_empty"] += 1
            continue
        chosen, rejected = (context.text(side) for side in sides)
        if chosen.strip() == rejected.strip():
            dropped["dpo_identical"] += 1
            continue
        roles = {"chosen": decision.chosen_id, "rejected": decision.rejected_id}
        examples.append(
            Example(
                kind="dpo",
                prompt=context.prompt,
                completion=chosen,
                rejected=rejected,
                source=decision.source,
                decided_at=decision.at,
                provenance=context.provenance(decision, roles),
            )
        )
    return examples


def _labels(
    context: _Context, answers: list[StoredMessage], state: CurrentFeedback, dropped: Counter[str]
) -> list[Example]:
    usable = {m.id for m in answers}
    decisions: dict[str, _LabelDecision] = {}

    def consider(message_id: str, decision: _LabelDecision) -> None:
        if message_id in usable and (
            message_id not in decisions or decision.at >= decisions[message_id].at
        ):
            decisions[message_id] = decision

    for message_id, vote in state.votes.items():
        consider(
            message_id, _LabelDecision(vote.created_at, (vote.id,), vote.kind, vote.kind == "like")
        )
    for pair, verdict in state.pairs.items():
        if verdict.kind == "both_bad":
            for message_id in pair:
                consider(
                    message_id, _LabelDecision(verdict.created_at, (verdict.id,), "both_bad", False)
                )
    for original_id, edit in state.edits.items():
        if edit.edit_message_id in usable:
            consider(original_id, _LabelDecision(edit.created_at, (edit.id,), "edit", False))
            consider(
                edit.edit_message_id, _LabelDecision(edit.created_at, (edit.id,), "edit", True)
            )

    return _completion_examples(context, "kto", decisions, dropped)


def _demonstrations(
    context: _Context, answers: list[StoredMessage], state: CurrentFeedback, dropped: Counter[str]
) -> list[Example]:
    usable = {m.id for m in answers}
    chosen: dict[str, _Decision] = {}
    for message_id, vote in state.votes.items():
        if vote.kind == "like" and message_id in usable:
            chosen[message_id] = _Decision(vote.created_at, (vote.id,), "like")
    for edit in state.edits.values():
        message_id = edit.edit_message_id or ""
        if message_id in usable and state.vote(message_id) != "dislike":
            chosen.setdefault(message_id, _Decision(edit.created_at, (edit.id,), "edit"))
    # An answer corrected after it was chosen (liked, or itself a correction) is shown no
    # longer: its correction is, as the KTO labels and DPO pairs say.
    for original_id, edit in state.edits.items():
        decision = chosen.get(original_id)
        if (decision is not None and edit.edit_message_id in usable
                and edit.created_at >= decision.at):
            del chosen[original_id]

    return _completion_examples(context, "sft", chosen, dropped)


def _completion_examples(context: _Context, kind: Kind, decisions: dict[str, _Decision],
                         dropped: Counter[str]) -> list[Example]:
    """One example per decided answer (KTO: labelled; SFT: demonstrated); empty answers are
    dropped and counted."""
    examples = []
    for message_id, decision in decisions.items():
        message = context.by_id[message_id]
        if _no_answer(message):
            dropped[f"{kind}_empty"] += 1
            continue
        completion = context.text(message)
        examples.append(
            Example(
                kind=kind,
                prompt=context.prompt,
                completion=completion,
                # KTO decisions carry their label; SFT ones have none.
                label=decision.desirable if isinstance(decision, _LabelDecision) else None,
                source=decision.source,
                decided_at=decision.at,
                provenance=context.provenance(decision, {"completion": message_id}),
            )
        )
    return examples
