"""From a conversation to the model's inputs, as the checkpoint's own template writes them.

`Prompts(processor, family, thinking_switch=..., device=...)` turns `Message`s into processor
inputs on the model's device plus the prompt's text (`build`). Every path that runs the model
on a conversation (both decoding paths, scoring, measuring what an image costs) builds its
prompt here.

- Chat models: the processor's chat template, with `enable_thinking` when the template takes
  the switch. User text must not be able to write control tokens (a fake turn, an image
  placeholder without an image): templates that write special tokens let transformers encode
  such text literally (`sanitize_control_tokens`); for processors that cannot (they raise
  NotImplementedError, learnt once) and families that say so, the tokens are removed from the
  user's text instead.
- Question/answer models without a chat template (BLIP-2): earlier turns as plain
  "Question: ... Answer: ..." lines; nothing encodes user text safely there, so control
  tokens are always removed from it.

Knows nothing of the UI or the database.
"""

from __future__ import annotations

from control_tokens import without_control_tokens
from engine.families import Family
from engine.types import Message


class Prompts:
    def __init__(self, processor, family: Family, *, thinking_switch: bool, device) -> None:
        self.processor = processor
        self.family = family
        self.thinking_switch = thinking_switch
        self.device = device
        self._sanitize = family.sanitize_control_tokens

    def build(self, messages: tuple[Message, ...], thinking: bool):
        """(processor inputs on the model's device, the prompt's text) for `messages`."""
        if self.family.prompt_style == "question_answer":
            return self._question_answer(messages)
        template_kwargs = {"enable_thinking": thinking} if self.thinking_switch else {}
        sanitize = self._sanitize
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
            self._sanitize = False
            return self.build(messages, thinking)
        return inputs.to(self.device), prompt_text

    def _control_tokens(self) -> list[str]:
        return [t.content for t in self.processor.tokenizer.added_tokens_decoder.values()
                if t.content.strip()]

    def _conversation(self, messages: tuple[Message, ...], scrub: bool) -> list[dict]:
        control = self._control_tokens() if scrub else []
        conversation = []
        for message in messages:
            text = without_control_tokens(message.text, control)
            content = [{"type": "image", "image": image} for image in message.images]
            content.append({"type": "text", "text": text})
            conversation.append({"role": message.role, "content": content})
        return conversation

    def _question_answer(self, messages: tuple[Message, ...]):
        control = self._control_tokens()
        lines = []
        for message in messages:
            text = without_control_tokens(message.text, control).strip()
            if message.role == "user":
                lines.append(f"Question: {text}")
            elif message.role == "assistant":
                lines.append(f"Answer: {text}")
        prompt = " ".join(lines) + " Answer:"
        images = [image for m in messages for image in m.images]
        inputs = self.processor(images=images or None, text=prompt, return_tensors="pt")
        return inputs.to(self.device), prompt
