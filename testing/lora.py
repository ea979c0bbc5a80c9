"""Train a real LoRA adapter on a tiny checkpoint, on CPU, in a few seconds.

`train_lora(checkpoint, out_dir, question=..., target=..., image=...)` loads the checkpoint's
processor and model, wraps linear layers with PEFT LoRA (by default the language model's),
and fits one example (the chat prompt the engine would build for `question` and `image`,
followed by `target` and the end-of-turn token) with a plain causal-LM loss on the answer
tokens only, at a high learning rate so the adapter clearly prefers `target`. The adapter is
written with `save_pretrained` into `out_dir`, ready for `LocalEngine(..., adapters=...)`.

`prompt_inputs` builds the same prompt, for callers that score answers themselves. The app
never trains this way; `training/` is the trainer users run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from engine.prompt_inputs import is_per_token


def _conversation(question: str, image: Image.Image | None) -> list[dict]:
    content: list[dict] = [{"type": "image", "image": image}] if image is not None else []
    content.append({"type": "text", "text": question})
    return [{"role": "user", "content": content}]


def prompt_inputs(processor, question: str, image: Image.Image | None = None,
                  thinking: bool = False) -> dict:
    """Processor outputs for one user turn and the assistant header, as the engine builds them."""
    template = getattr(processor, "chat_template", None) or ""
    extra = {"enable_thinking": thinking} if "enable_thinking" in template else {}
    return dict(processor.apply_chat_template(
        _conversation(question, image), add_generation_prompt=True, tokenize=True,
        return_dict=True, return_tensors="pt", **extra))


def text_model_linears(model) -> list[str]:
    """Full names of the language model's linear layers: LoRA targets that exist in any family."""
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".language_model." in f".{name}."]


def _with_answer(inputs: dict, answer_ids: list[int]) -> tuple[dict, torch.Tensor]:
    """The prompt plus the answer tokens, and labels that score only the answer."""
    prompt_length = inputs["input_ids"].shape[1]
    answer = torch.tensor([answer_ids], dtype=inputs["input_ids"].dtype)
    full = {}
    for key, value in inputs.items():
        if key == "input_ids":
            full[key] = torch.cat([value, answer], dim=1)
        elif is_per_token(key, value, prompt_length):
            fill = 1 if key == "attention_mask" else 0
            full[key] = torch.cat([value, torch.full_like(answer, fill, dtype=value.dtype)], dim=1)
        else:
            full[key] = value
    labels = full["input_ids"].clone()
    labels[:, :prompt_length] = -100
    return full, labels


def _load_auto(checkpoint: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    return processor, AutoModelForImageTextToText.from_pretrained(checkpoint,
                                                                  dtype=torch.float32)


def train_lora(checkpoint: Path, out_dir: Path, *, question: str, target: str,
               image: Image.Image | None = None, steps: int = 30, learning_rate: float = 1e-2,
               rank: int = 8, seed: int = 0,
               load: Callable[[Path], tuple] = _load_auto,
               targets: Callable[[torch.nn.Module], list[str]] = text_model_linears) -> Path:
    """Fit a LoRA adapter so that `question` (with `image`) is answered with `target`.

    `load(checkpoint)` gives (processor, float32 model) for families transformers' auto
    classes do not know; `targets(model)` names the linear layers to adapt."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    processor, model = load(checkpoint)
    tokenizer = processor.tokenizer
    answer_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    inputs, labels = _with_answer(prompt_inputs(processor, question, image), answer_ids)

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                        target_modules=targets(model))
    peft_model = get_peft_model(model, config)
    peft_model.train()
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=learning_rate)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = peft_model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
    peft_model.save_pretrained(out_dir)
    return out_dir
