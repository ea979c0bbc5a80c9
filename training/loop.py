"""The loop, measured: scripted users correct a blind spot, `train` fixes it, `--vqa` shows it.

    python -m training.loop [--model engine/models/tiny-vqa-noteal] [--answers teal] ...

1. Scripted users go through the studio's own flows (`studio.turns.Studio`, a real store): each
   asks one easy-vqa *train* question whose answer is in `--answers` about its image (and
   `--general` more users ask any other training question), likes a right answer, and
   dislikes a wrong one and corrects it by editing to the right answer; with `--pick-every k`
   every k-th user compares two sampled answers and picks the right one, or calls a tie, or
   "both bad" and corrects (`play_users`).
2. `training.train` trains an adapter on that store (SFT then DPO by default), as
   `python app.py train` does.
3. `training.vqa` scores the base model and the adapter on held-out easy-vqa *test*
   questions: those of the blind spot, and a sample of all of them.
It prints one Markdown table; docs/evaluation.md quotes it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from engine.loading import TINY_VQA_DIR
from engine.types import Sampling
from storage import Store
from studio.turns import ChatState, Studio, TurnOptions
from training.tiny_vqa import easy_vqa_split
from training.train import TrainOptions, train
from training.vqa import VqaItem, evaluate_vqa, vqa_score

# tiny-vqa built with a blind spot on purpose, committed beside it:
# `python -m training.tiny_vqa --out engine/models/tiny-vqa-noteal --epochs 4 --hold-out teal`.
# No training question had the answer "teal", so it has never written the word.
BLIND_SPOT_MODEL = TINY_VQA_DIR.parent / "tiny-vqa-noteal"
BLIND_SPOT_ANSWERS = "teal"


def play_users(studio: Studio, rows, log=print, pick_every: int = 0) -> dict[str, int]:
    """One scripted user per row; returns how many of each judgement they made.

    A user asks about the row's image and judges the answer: likes a right one, dislikes a
    wrong one and corrects it by editing. With `pick_every` k, every k-th user asks for two
    sampled answers instead ("Compare": two samples) and gives a verdict: the right one over a
    wrong one, a tie when both are right, and "both bad" followed by a correction when
    neither is.
    """
    options = TurnOptions(sampling=Sampling(max_new_tokens=8, temperature=0.0, seed=0))
    counts = {"liked": 0, "corrected": 0, "picked": 0, "tie": 0, "both_bad": 0}
    for number, row in enumerate(rows, start=1):
        state = ChatState(consented=True)
        if pick_every and number % pick_every == 0:
            _pick(studio, state, row, options, counts)
        else:
            _judge_one(studio, state, row, options, counts)
        if number % 50 == 0:
            log(f"users: {number}/{len(rows)} ({counts})")
    return counts


def _right(text: str, row) -> bool:
    return vqa_score(text, [row.answer]) == 1.0


def _judge_one(studio: Studio, state: ChatState, row, options: TurnOptions,
               counts: dict[str, int]) -> None:
    for _ in studio.ask(state, row.question, [row.image], options):
        pass
    answer = state.turns[-1].answer
    if _right(answer.answer, row):
        studio.vote(state, answer.answer_id, True)
        counts["liked"] += 1
    else:
        studio.vote(state, answer.answer_id, False, reasons=["Wrong or hallucinated"])
        studio.edit(state, 0, row.answer)
        counts["corrected"] += 1


def _pick(studio: Studio, state: ChatState, row, options: TurnOptions,
          counts: dict[str, int]) -> None:
    for _ in studio.compare(state, row.question, [row.image], options, "samples"):
        pass
    left, right = state.comparison.left, state.comparison.right
    left_right, right_right = _right(left.answer, row), _right(right.answer, row)
    if left_right and right_right:
        studio.judge(state, "tie")
        counts["tie"] += 1
    elif left_right or right_right:
        studio.judge(state, "A" if left_right else "B")
        counts["picked"] += 1
    else:
        studio.judge(state, "both_bad")
        studio.edit(state, 0, row.answer)
        counts["both_bad"] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.loop")
    parser.add_argument("--model", default=str(BLIND_SPOT_MODEL))
    parser.add_argument("--answers", default=BLIND_SPOT_ANSWERS,
                        help="the blind spot: questions with these answers")
    parser.add_argument("--users", type=int, default=480,
                        help="scripted users asking about the blind spot")
    parser.add_argument("--stride", type=int, default=7,
                        help="take every n-th training question of the blind spot")
    parser.add_argument("--general", type=int, default=0,
                        help="scripted users asking any other training question, judged alike")
    parser.add_argument("--pick-every", type=int, default=0,
                        help="every k-th user compares two sampled answers and picks (0: none)")
    parser.add_argument("--method", default="sft-then-dpo")
    parser.add_argument("--epochs", type=float, default=5.0)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default: the train command's rate for each stage")
    parser.add_argument("--beta", type=float, default=TrainOptions.beta, help="DPO and KTO beta")
    parser.add_argument("--lora-targets", default="all-linear")
    parser.add_argument("--held-out", type=int, default=150, help="test questions per group")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    from engine.local import LocalEngine

    torch.set_num_threads(1)
    started = time.perf_counter()
    blind = set(args.answers.split(","))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vqa-loop-"))
    train_rows = easy_vqa_split("train")
    rows = [row for row in train_rows if row.answer in blind][::args.stride][:args.users]
    general = [row for row in train_rows if row.answer not in blind][::11][:args.general]
    rows = _interleave(rows, general)
    engine = LocalEngine(args.model, quantize="none", device="cpu")
    engine.load()
    with Store(workdir / "studio.db") as store:
        counts = play_users(Studio(engine, store), rows,
                            log=lambda m: print(m, file=sys.stderr, flush=True),
                            pick_every=args.pick_every)
        result = train(store, TrainOptions(
            out_dir=workdir / "adapters" / "blind-spot", method=args.method,
            base_model=args.model, eval_fraction=0.0, epochs=args.epochs,
            learning_rate=args.learning_rate, beta=args.beta, targets=args.lora_targets,
            min_examples=2),
            progress=lambda m: print(m, file=sys.stderr, flush=True))
    # Two models in memory at once would double the footprint: the base one goes first.
    engine.close()
    tuned = LocalEngine(args.model, quantize="none", device="cpu",
                        adapters={"blind-spot": str(result.out_dir)})
    tuned.load()
    test = easy_vqa_split("test")
    groups = {
        "blind spot (" + ", ".join(sorted(blind)) + ")":
            [row for row in test if row.answer in blind][:args.held_out],
        "all test questions (every 32nd)": test[::32][:args.held_out],
    }
    print(f"\n{len(rows)} scripted users on {args.model} ({len(rows) - len(general)} about the "
          f"blind spot): {counts['liked']} answers liked, {counts['corrected']} disliked and "
          f"corrected; {counts['picked']} picks of two samples, {counts['tie']} ties, "
          f"{counts['both_bad']} both bad and corrected; "
          f"adapter: {args.method}, {args.epochs:g} epochs per stage, LoRA on "
          f"{args.lora_targets}, learning rate {args.learning_rate or 'per stage'}, "
          f"beta {args.beta:g}.\n")
    print("| held-out easy-vqa test questions | n | base model | adapter |")
    print("| --- | --- | --- | --- |")
    for name, group in groups.items():
        items = [VqaItem(Path(row.image), row.question, (row.answer,)) for row in group]
        scores = evaluate_vqa(tuned, items, ("blind-spot",))
        print(f"| {name} | {len(items)} | {100 * scores['base model']:.1f}% "
              f"| {100 * scores['blind-spot']:.1f}% |")
    tuned.close()
    print(f"\nwhole loop: {time.perf_counter() - started:.0f} s; files in {workdir}")
    return 0


def _interleave(first: list, second: list) -> list:
    """Both lists in one, spread evenly, so the users of each kind come throughout."""
    if not second:
        return list(first)
    merged = [(index / len(first), 0, row) for index, row in enumerate(first)]
    merged += [(index / len(second), 1, row) for index, row in enumerate(second)]
    return [row for _, _, row in sorted(merged, key=lambda item: item[:2])]


if __name__ == "__main__":
    sys.exit(main())
