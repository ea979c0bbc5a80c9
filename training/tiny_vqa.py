"""`tiny-vqa`: a small LLaVA trained on easy-vqa, so the studio has a model that really answers.

easy-vqa (the `easy-vqa` package: 4,000 train and 1,000 test 64x64 images of one coloured
shape each, 38,575 / 9,673 questions, 13 one-word answers) is the whole world of this model.
The checkpoint is a standard `LlavaForConditionalGeneration` with the tiny LLaVA 1.5 layout of
`engine.tiny.llava` (CLIP ViT + Llama, the Vicuna "USER: ... ASSISTANT:" template), sized for
64 px images with patch 16, trained from random weights with transformers' `Trainer` on the
CPU in two stages. First the vision tower alone learns each training image's shape and
colour, as the training questions tell them (`image_labels`); then, the tower frozen, the
projector and language model learn the answers: the prompt is exactly what the engine builds
for one image and one question, the loss is on the answer and its end-of-turn token only.
Seeded, so a rebuild gives the same weights on the same machine and library versions.

    python -m training.tiny_vqa [--out engine/models/tiny-vqa] [--epochs 6] [--limit N]
                                [--vision-epochs 60] [--hold-out ANSWER,...] [--augment]
    python -m training.tiny_vqa --score CHECKPOINT [--split test|train] [--every 5]

writes the checkpoint (via a temporary sibling folder, renamed at the end) and prints the
exact-match accuracy of greedy answers on the easy-vqa test split; the figures go to
docs/benchmarks.md. `--model tiny-vqa` loads the committed copy, engine/models/tiny-vqa.
`easy_vqa_split(name)` gives (image path, question, answer) rows for other tools.

`--hold-out teal` builds a model with a blind spot on purpose: no training question whose
answer is "teal" (questions that only mention teal, and teal shapes, are still seen), so the
model has never written the word; built with `--epochs 4`, it is committed as
engine/models/tiny-vqa-noteal. `python -m training.loop` measures how far users' corrections
through the studio teach it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

IMAGE_SIZE, PATCH_SIZE = 64, 16
# The LLaVA 1.5 conversation format ("USER: <image>\n... ASSISTANT:"), with each answer closed
# by the end-of-sequence token, as the model is trained to answer: a trainer that renders an
# answer through this template (TRL does) teaches the answer and where it ends.
TEMPLATE = """\
{%- for message in messages -%}
{%- if message.role == 'assistant' -%}{{ 'ASSISTANT:' }}
{%- elif message.role != 'system' -%}{{ message.role.upper() + ': ' }}{%- endif -%}
{%- if message.content is string -%}{{ message.content }}
{%- else -%}
{%- for part in message.content if part.type == 'image' -%}{{ '<image>\\n' }}{%- endfor -%}
{%- for part in message.content if part.type == 'text' -%}{{ part.text }}{%- endfor -%}
{%- endif -%}
{{ '</s>' if message.role == 'assistant' else ' ' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}
"""
SEED = 1234
SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")


@dataclass(frozen=True)
class VqaRow:
    image: str  # path of the image file
    question: str
    answer: str


def easy_vqa_split(split: str) -> list[VqaRow]:
    """The easy-vqa "train" or "test" questions, with their image files."""
    import easy_vqa

    if split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    elif split == "test":
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        raise ValueError(f"easy-vqa has a train and a test split, not {split!r}")
    return [VqaRow(paths[i], q, a) for q, a, i in zip(questions, answers, image_ids, strict=True)]


def build_untrained(folder: Path) -> None:
    """The untrained checkpoint: random weights, processor, template, written to `folder`."""
    from transformers import (
        CLIPImageProcessor,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from engine.tiny.common import decoder_config, llama_style_tokenizer, seed_everything
    from engine.tiny.llava import IMAGE_TOKEN

    tokenizer = llama_style_tokenizer([IMAGE_TOKEN], TEMPLATE)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=TEMPLATE,
    )
    text_config = decoder_config("llama", tokenizer)
    text_config.update(hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                       num_attention_heads=3, num_key_value_heads=3)
    vision_config = {
        "model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE, "projection_dim": 64,
    }
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        # Input and output embeddings apart, as in the other tiny checkpoints.
        tie_word_embeddings=False,
    )
    seed_everything(SEED)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


class _Encoded:
    """Rows as token ids and pixel values, computed once: every image and question once.

    With `augment`, each item's image comes in one of its eight flips and quarter turns,
    drawn from torch's global generator (which the Trainer seeds, so a rebuild draws the
    same): easy-vqa asks nothing about where a shape is or which way it points, so every
    one of them keeps the answer. Off by default: it did not raise the test accuracy, as the
    model was not learning the training images by heart (docs/benchmarks.md, section 10).
    """

    def __init__(self, processor, rows: list[VqaRow], augment: bool = False) -> None:
        import torch
        from PIL import Image

        self.tokenizer = processor.tokenizer
        images = sorted({row.image for row in rows})
        self.image_index = {path: n for n, path in enumerate(images)}
        pixels = []
        for start in range(0, len(images), 500):
            batch = [Image.open(p).convert("RGB") for p in images[start:start + 500]]
            pixels.append(processor.image_processor(batch, return_tensors="pt")["pixel_values"])
        self.pixels = torch.cat(pixels)
        blank = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE))
        self.prompts: dict[str, list[int]] = {}
        for question in {row.question for row in rows}:
            text = processor.apply_chat_template(_conversation(question),
                                                 add_generation_prompt=True, tokenize=False)
            self.prompts[question] = list(processor(text=text, images=blank)["input_ids"][0])
        self.answers = {answer: self.tokenizer(answer, add_special_tokens=False)["input_ids"]
                        + [self.tokenizer.eos_token_id] for answer in {r.answer for r in rows}}
        self.rows = rows
        self.augment = augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        prompt, answer = self.prompts[row.question], self.answers[row.answer]
        pixels = self.pixels[self.image_index[row.image]]
        if self.augment:
            import torch

            turn = int(torch.randint(8, ()))
            pixels = torch.rot90(pixels, turn % 4, dims=(1, 2))
            if turn >= 4:
                pixels = torch.flip(pixels, dims=(2,))
        return {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer,
                "pixel_values": pixels}


def mentioned(question: str, names: tuple[str, ...]) -> list[str]:
    """Which of `names` a question mentions, as whole words."""
    return [name for name in names if re.search(rf"\b{name}\b", question)]


def image_labels(rows: list[VqaRow], names: tuple[str, ...]) -> dict[str, str]:
    """Which of `names` (the shapes, or the colours) each image shows, as the rows' own
    questions and answers tell it.

    Every easy-vqa image holds one shape of one colour. A question answered with a name says
    it; a yes/no question about one name ("is there a circle?", "is there not a blue shape?",
    "is no circle present?") says the image shows it, or does not; all names but one ruled out
    leave that one. An image its rows say nothing of, or contradict themselves about, has no
    label.
    """
    said: dict[str, set[str]] = {}
    ruled_out: dict[str, set[str]] = {}
    for row in rows:
        if row.answer in names:
            said.setdefault(row.image, set()).add(row.answer)
            continue
        named = mentioned(row.question, names)
        if len(named) != 1 or row.answer not in ("yes", "no"):
            continue
        negated = bool(re.search(r"\b(not|no)\b", row.question))
        holds = (row.answer == "yes") != negated
        (said if holds else ruled_out).setdefault(row.image, set()).add(named[0])
    labels = {}
    for image in said.keys() | ruled_out.keys():
        shown = said.get(image, set()) or set(names) - ruled_out.get(image, set())
        if len(shown) == 1 and not shown & ruled_out.get(image, set()):
            labels[image] = next(iter(shown))
    return labels


class _ImageTask:
    """The vision tower's own training data: each image with a known shape or colour once,
    with their indices (-100 where unknown, which the loss skips)."""

    def __init__(self, encoded: _Encoded, rows: list[VqaRow]) -> None:
        shapes, colours = image_labels(rows, SHAPES), image_labels(rows, COLOURS)
        self.items = [(encoded.image_index[image],
                       SHAPES.index(shapes[image]) if image in shapes else -100,
                       COLOURS.index(colours[image]) if image in colours else -100)
                      for image in sorted(shapes.keys() | colours.keys())]
        self.pixels = encoded.pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image, shape, colour = self.items[index]
        return {"pixel_values": self.pixels[image], "shape": shape, "colour": colour}


def _image_classifier(vision_tower):
    """The vision tower with linear heads naming the shape and the colour from its mean patch
    feature: the patch features (not the class token) are what LLaVA's projector passes to
    the language model, so those are what these losses train."""
    import torch

    class ImageClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision_tower = vision_tower
            width = vision_tower.config.hidden_size
            self.shape_head = torch.nn.Linear(width, len(SHAPES))
            self.colour_head = torch.nn.Linear(width, len(COLOURS))

        def forward(self, pixel_values, shape=None, colour=None):
            features = self.vision_tower(pixel_values=pixel_values).last_hidden_state
            pooled = features[:, 1:].mean(dim=1)
            logits = {"shape": self.shape_head(pooled), "colour": self.colour_head(pooled)}
            loss = None
            if shape is not None:
                cross_entropy = torch.nn.functional.cross_entropy
                # An image without a label of one kind adds nothing to that kind's loss.
                loss = sum(cross_entropy(logits[kind], labels, ignore_index=-100,
                                         reduction="sum") / max(int((labels >= 0).sum()), 1)
                           for kind, labels in (("shape", shape), ("colour", colour)))
            return {"loss": loss, **logits}

    return ImageClassifier()


def _vision_accuracy(classifier, encoded: _Encoded, rows: list[VqaRow]) -> dict[str, float]:
    """Share of the rows' labelled images whose shape, and colour, the classifier names."""
    import torch

    task = _ImageTask(encoded, rows)
    if not len(task):
        return {}
    items = [task[n] for n in range(len(task))]
    classifier.eval()
    with torch.no_grad():
        logits = classifier(pixel_values=torch.stack([item["pixel_values"] for item in items]))
    classifier.train()
    scores = {}
    for kind in ("shape", "colour"):
        truth = torch.tensor([item[kind] for item in items])
        known = truth >= 0
        named = logits[kind].argmax(-1)
        scores[kind] = float((named[known] == truth[known]).float().mean())
    return scores


def _conversation(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def _collate(pad_id: int):
    import torch

    def collate(items: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), pad_id)
        labels = torch.full((len(items), width), -100)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for n, item in enumerate(items):
            length = len(item["input_ids"])
            ids[n, :length] = torch.tensor(item["input_ids"])
            labels[n, :length] = torch.tensor(item["labels"])
            mask[n, :length] = 1
        pixels = torch.stack([item["pixel_values"] for item in items])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask,
                "pixel_values": pixels}

    return collate


def greedy_answers(model, processor, rows: list[VqaRow], batch_size: int = 256,
                   encoded: _Encoded | None = None) -> list[str]:
    """The model's greedy answer to each row, trimmed (`encoded`: the rows, already encoded)."""
    import torch

    encoded = encoded or _Encoded(processor, rows)
    tokenizer = processor.tokenizer
    answers: list[str] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = range(start, min(start + batch_size, len(rows)))
            prompts = [encoded.prompts[rows[n].question] for n in chunk]
            width = max(map(len, prompts))
            # Left padding, so every answer starts right after its prompt.
            ids = torch.full((len(prompts), width), tokenizer.pad_token_id)
            mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for k, prompt in enumerate(prompts):
                ids[k, width - len(prompt):] = torch.tensor(prompt)
                mask[k, width - len(prompt):] = 1
            pixels = torch.stack([encoded.pixels[encoded.image_index[rows[n].image]]
                                  for n in chunk])
            out = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                                 max_new_tokens=8, do_sample=False)
            answers += [tokenizer.decode(out[k, width:], skip_special_tokens=True).strip()
                        for k in range(len(chunk))]
    return answers


def accuracy(model, processor, rows: list[VqaRow], batch_size: int = 256,
             encoded: _Encoded | None = None) -> float:
    """Share of greedy answers equal to the easy-vqa answer (after trimming)."""
    answers = greedy_answers(model, processor, rows, batch_size, encoded)
    return sum(a == row.answer for a, row in zip(answers, rows, strict=True)) / len(rows)


def question_kind(row: VqaRow) -> str:
    """What a question asks about: "naming the shape", "what colour", or a yes/no question
    "about a shape" or "about a colour" (easy-vqa's questions name one of them at most)."""
    if row.answer in SHAPES:
        return "naming the shape"
    if row.answer not in ("yes", "no"):
        return "what colour"
    if mentioned(row.question, SHAPES):
        return "yes/no about a shape"
    return "yes/no about a colour"


def accuracy_by_kind(model, processor, rows: list[VqaRow]) -> dict[str, tuple[int, int]]:
    """(right, asked) for each `question_kind`, and for "all"."""
    answers = greedy_answers(model, processor, rows)
    counts: dict[str, list[int]] = {}
    for answer, row in zip(answers, rows, strict=True):
        for kind in (question_kind(row), "all"):
            tally = counts.setdefault(kind, [0, 0])
            tally[0] += answer == row.answer
            tally[1] += 1
    return {kind: (right, asked) for kind, (right, asked) in sorted(counts.items())}


def score(folder: Path, *, split: str = "test", every: int = 5, log=print) -> dict:
    """Accuracy by kind of question of the checkpoint in `folder`, over every `every`-th
    question of an easy-vqa split."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(folder)
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    by_kind = accuracy_by_kind(model, processor, easy_vqa_split(split)[::every])
    for kind, (right, asked) in by_kind.items():
        log(f"{kind}: {right / asked:.1%} ({right} / {asked})")
    return by_kind


def build(out: Path, *, epochs: float = 6.0, limit: int | None = None, batch_size: int = 64,
          learning_rate: float = 1e-3, hold_out: frozenset[str] = frozenset(),
          augment: bool = False, vision_epochs: float = 60.0, log=print) -> dict:
    """Train and write the checkpoint to `out` (new or empty); returns the build report."""
    import torch
    from transformers import (
        AutoProcessor,
        LlavaForConditionalGeneration,
        Trainer,
        TrainingArguments,
    )

    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is shared like any other
    try:
        build_untrained(staging)
        processor = AutoProcessor.from_pretrained(staging)
        model = LlavaForConditionalGeneration.from_pretrained(staging, dtype=torch.float32)
        train_rows = [row for row in easy_vqa_split("train") if row.answer not in hold_out]
        test_rows = easy_vqa_split("test")
        if limit:
            train_rows, test_rows = train_rows[:limit], test_rows[:max(limit // 4, 1)]
        data = _Encoded(processor, train_rows, augment=augment)
        test_data = _Encoded(processor, test_rows)  # for both stages' test accuracy

        def arguments(run: str, epochs: float) -> TrainingArguments:
            return TrainingArguments(
                output_dir=str(staging / run), num_train_epochs=epochs,
                per_device_train_batch_size=batch_size, learning_rate=learning_rate,
                lr_scheduler_type="cosine", warmup_steps=0.03, weight_decay=0.01,
                use_cpu=True, seed=SEED, report_to="none", save_strategy="no",
                logging_steps=100, disable_tqdm=True, dataloader_num_workers=0,
                remove_unused_columns=False)

        # Stage 1, the vision tower alone learns to name each image's shape and colour;
        # stage 2 trains the rest on the questions, the tower frozen (as LLaVA keeps its
        # pretrained CLIP). Trained only through the answers, the tower never learnt shapes:
        # the language model guessed shape questions from their words, and almost no signal
        # reached the tower (docs/benchmarks.md, section 10).
        vision = {}
        images = _ImageTask(data, train_rows)
        if vision_epochs and len(images):
            classifier = _image_classifier(model.model.vision_tower)
            stage = Trainer(model=classifier, args=arguments("vision", vision_epochs),
                            train_dataset=images).train()
            shutil.rmtree(staging / "vision", ignore_errors=True)
            vision = {"vision_epochs": vision_epochs, "vision_images": len(images),
                      "vision_train_loss": stage.training_loss,
                      "vision_test_accuracy": _vision_accuracy(classifier, test_data,
                                                               test_rows)}
            log(json.dumps(vision))
            model.model.vision_tower.requires_grad_(False)
        # Stage 2, the language model and the projector learn to answer.
        trainer = Trainer(model=model, args=arguments("run", epochs), train_dataset=data,
                          data_collator=_collate(processor.tokenizer.pad_token_id))
        outcome = trainer.train()
        shutil.rmtree(staging / "run", ignore_errors=True)
        train_seconds = time.perf_counter() - started
        test_accuracy = accuracy(model, processor, test_rows, encoded=test_data)
        report = {
            "train_questions": len(train_rows), "test_questions": len(test_rows),
            "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
            "held_out_answers": sorted(hold_out), "augmented": augment, **vision,
            "train_loss": outcome.training_loss, "test_accuracy": test_accuracy,
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(train_seconds), "torch_threads": torch.get_num_threads(),
        }
        model.save_pretrained(staging)
        (staging / "tiny-vqa-build.json").write_text(json.dumps(report, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(json.dumps(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tiny_vqa",
                                     description="Train the tiny-vqa checkpoint on easy-vqa")
    parser.add_argument("--out", type=Path, default=Path("engine/models/tiny-vqa"))
    parser.add_argument("--epochs", type=float, default=6.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    # One thread: on a shared or small machine a second one mostly spins waiting.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on the first N questions only (a quick check)")
    parser.add_argument("--hold-out", default="",
                        help="comma-separated answers no training question may have: a blind "
                             "spot on purpose")
    parser.add_argument("--augment", action="store_true",
                        help="train on random flips and quarter turns of the images")
    parser.add_argument("--vision-epochs", type=float, default=60.0,
                        help="epochs of the vision tower learning shapes and colours alone, "
                             "before the rest learns to answer with it frozen (0: none; the "
                             "whole model then learns from the answers)")
    parser.add_argument("--score", type=Path, metavar="CHECKPOINT",
                        help="train nothing: print the accuracy of a built checkpoint by kind "
                             "of question")
    parser.add_argument("--split", default="test", choices=("test", "train"),
                        help="with --score: the easy-vqa split asked")
    parser.add_argument("--every", type=int, default=5,
                        help="with --score: ask every N-th question of the split")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.score:
        score(args.score, split=args.split, every=args.every)
        return 0
    hold_out = frozenset(a.strip() for a in args.hold_out.split(",") if a.strip())
    build(args.out, epochs=args.epochs, limit=args.limit, batch_size=args.batch_size,
          learning_rate=args.learning_rate, hold_out=hold_out, augment=args.augment,
          vision_epochs=args.vision_epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
