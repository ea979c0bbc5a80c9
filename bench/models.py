"""Random Qwen3.5 checkpoints of chosen sizes, built offline for the benchmarks.

The tiny checkpoint (`tiny-random`) decodes at hundreds of tokens per second on one CPU thread,
far faster than any real model; the "medium" one here is sized to decode at roughly 50 tokens
per second on one thread of the benchmark machine when it is quiet, closer to what a user of
a small real model sees, so the app's own costs can be judged against a realistic token rate.
`bench.gpu` uses the same builder with the published sizes.

Checkpoints get a byte-level tokenizer trained offline (`engine.tiny.common`), the Qwen chat
template with thinking and the vision token names of `engine.tiny.qwen`, seeded weights and
silenced control tokens, with the widths of `QwenSize`, and are saved with `save_pretrained`,
so the app loads them with `--model PATH` like any checkpoint. Named ones go to
<cache>/bench/qwen3_5-<name>-v<N> (cache: $VQA_STUDIO_CACHE or ~/.cache/vqa-studio) and are
built as the tiny checkpoints are (`engine.tiny.build_once`): only when missing or incomplete.

`model_path(name)` gives the folder of one of `MODELS` ("tiny" is tiny-random), built first if
needed. `python -m bench.models` builds the medium checkpoint and prints its size and decode
speed, asking the question of `bench.workload`.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.workload import engine_request


@dataclass(frozen=True)
class QwenSize:
    """Widths of a Qwen3.5 text model (3 linear-attention layers per full one) and its ViT."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    linear_key_heads: int
    linear_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    vision_depth: int
    vision_hidden: int
    vision_heads: int
    vision_intermediate: int
    tie_embeddings: bool = False
    # None: the tokenizer's length. A larger vocabulary (the real 248,320) keeps the embedding
    # and output sizes real; the ids the tokenizer cannot decode are silenced in the output.
    vocab_size: int | None = None
    max_position_embeddings: int = 8192

    @property
    def layer_types(self) -> list[str]:
        """Every fourth layer full attention; a model of fewer layers ends with one."""
        return [("full_attention" if (i + 1) % 4 == 0 or i == min(self.layers, 4) - 1
                 else "linear_attention") for i in range(self.layers)]


# Shaped like Qwen3.5-0.8B (3:1 layer mix, grouped-query attention, as many linear-attention
# key as value heads) at 3/8 of its width and a third of its depth: about 24 M parameters,
# which decode at about 50 tokens/s on one thread of the benchmark machine when it is quiet
# (see docs/benchmarks.md).
MEDIUM = QwenSize(hidden=384, intermediate=1344, layers=8, heads=6, kv_heads=2, head_dim=64,
                  linear_key_heads=6, linear_value_heads=6, linear_key_head_dim=64,
                  linear_value_head_dim=64, vision_depth=4, vision_hidden=256, vision_heads=4,
                  vision_intermediate=1024)
CHECKPOINTS = {"medium": (2, MEDIUM)}
# The two engine speeds every benchmark can run at: tiny-random and the medium checkpoint.
MODELS = ("tiny", *CHECKPOINTS)
# The tiny processor's bounds (4 to 64 merged vision tokens per image), so an image costs the
# same number of prompt tokens as with tiny-random.
SMALL_IMAGES = (4, 64)


def mrope_section(head_dim: int, partial_rotary_factor: float = 0.25) -> list[int]:
    """Temporal, height, width shares of the rotary half-dimensions, as even as possible.

    Must sum to head_dim * partial_rotary_factor / 2; for head_dim 256 this is the published
    [11, 11, 10].
    """
    half = int(head_dim * partial_rotary_factor) // 2
    base, extra = divmod(half, 3)
    return [base + (1 if i < extra else 0) for i in range(3)]


def tokenizer_and_processor(image_tokens: tuple[int, int] | None = SMALL_IMAGES):
    """The tiny Qwen3.5 tokenizer (with chat template) and a Qwen3-VL processor around it.

    `image_tokens` bounds the merged vision tokens per image; None keeps the published
    Qwen3.5 preprocessor bounds (65,536 to 16,777,216 pixels).
    """
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )
    from transformers.models.qwen3_5.tokenization_qwen3_5 import (
        PRETOKENIZE_REGEX,
        Qwen3_5Tokenizer,
    )

    from engine.tiny.common import qwen_style_tokenizer
    from engine.tiny.qwen import THINKING_TEMPLATE, VISION_TOKENS

    tokenizer = qwen_style_tokenizer(
        Qwen3_5Tokenizer, PRETOKENIZE_REGEX, VISION_TOKENS, THINKING_TEMPLATE)
    patch, merge = 16, 2
    if image_tokens is None:
        size = {"shortest_edge": 65_536, "longest_edge": 16_777_216}
    else:
        unit = (patch * merge) ** 2
        size = {"shortest_edge": unit * image_tokens[0], "longest_edge": unit * image_tokens[1]}
    sizes = {"size": size, "patch_size": patch, "temporal_patch_size": 2, "merge_size": merge,
             "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes), tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**sizes), chat_template=tokenizer.chat_template)
    return tokenizer, processor


def qwen3_5_config(size: QwenSize, tokenizer):
    from transformers import Qwen3_5Config

    from engine.tiny.qwen import VISION_TOKENS

    start, end, image, video = tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    text_config = {
        "vocab_size": size.vocab_size or len(tokenizer),
        "hidden_size": size.hidden,
        "intermediate_size": size.intermediate,
        "num_hidden_layers": size.layers,
        "layer_types": size.layer_types,
        "num_attention_heads": size.heads,
        "num_key_value_heads": size.kv_heads,
        "head_dim": size.head_dim,
        "linear_num_key_heads": size.linear_key_heads,
        "linear_num_value_heads": size.linear_value_heads,
        "linear_key_head_dim": size.linear_key_head_dim,
        "linear_value_head_dim": size.linear_value_head_dim,
        "linear_conv_kernel_dim": 4,
        "max_position_embeddings": size.max_position_embeddings,
        "tie_word_embeddings": size.tie_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10_000_000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": mrope_section(size.head_dim),
            "mrope_interleaved": True,
        },
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision_config = {
        "depth": size.vision_depth,
        "hidden_size": size.vision_hidden,
        "intermediate_size": size.vision_intermediate,
        "num_heads": size.vision_heads,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": size.hidden,
        "num_position_embeddings": 2304,
    }
    return Qwen3_5Config(text_config=text_config, vision_config=vision_config,
                         tie_word_embeddings=size.tie_embeddings, vision_start_token_id=start,
                         vision_end_token_id=end, image_token_id=image, video_token_id=video)


def build_qwen3_5(folder: Path, size: QwenSize, *, image_tokens=SMALL_IMAGES,
                  device: str = "cpu", dtype=None) -> None:
    """A random Qwen3_5ForConditionalGeneration of `size`, saved into `folder`.

    `device` and `dtype` say where the random weights are made (a 9B model is made on the GPU
    in bf16 in seconds, on a CPU in minutes); they are saved in that dtype.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    from engine.tiny.common import save_checkpoint, seed_everything, silence_tokens
    from engine.tiny.qwen import EOS_TOKENS

    tokenizer, processor = tokenizer_and_processor(image_tokens)
    config = qwen3_5_config(size, tokenizer)
    seed_everything()
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype or torch.float32)
    model.eval()
    vocab = config.text_config.vocab_size
    if vocab > len(tokenizer):
        silence_tokens(model, range(len(tokenizer), vocab))
    save_checkpoint(folder, model, processor, tokenizer, EOS_TOKENS)


def model_path(name: str) -> str:
    """The folder of one of `MODELS`, built first if needed: "tiny" is tiny-random."""
    if name == "tiny":
        from engine.tiny import ensure_tiny

        return str(ensure_tiny("qwen3_5"))
    return str(ensure_checkpoint(name))


def checkpoint_path(name: str, cache_dir: Path | None = None) -> Path:
    from bench.common import bench_cache_dir

    version, _ = CHECKPOINTS[name]
    return (cache_dir or bench_cache_dir()) / f"qwen3_5-{name}-v{version}"


def ensure_checkpoint(name: str, cache_dir: Path | None = None) -> Path:
    """The folder of a named benchmark checkpoint, built first if needed."""
    from engine.tiny import build_once

    _, size = CHECKPOINTS[name]
    return build_once(checkpoint_path(name, cache_dir),
                      lambda folder: build_qwen3_5(folder, size), name)


def parameter_count(path: Path) -> int:
    import math

    from safetensors import safe_open

    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(file, "pt") as weights:
            names = list(weights.keys())
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in names)
    return total


def decode_speed(path: Path, max_new_tokens: int = 64, repetitions: int = 3) -> list[float]:
    """Engine-reported decode tokens/s of greedy answers about a photo-sized image."""
    from bench.common import scene_image
    from engine.images import ImagePolicy, load_image
    from engine.local import LocalEngine

    engine = LocalEngine(str(path), quantize="none", device="cpu")
    engine.load()
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        image = load_image(str(scene_image(Path(tmp) / "scene.png")), ImagePolicy())
    request = engine_request(image, max_new_tokens)
    speeds = []
    for _ in range(repetitions + 1):  # the first run warms caches up and is not counted
        stats = [e.stats for e in engine.stream(request) if e.kind == "done"][0]
        speeds.append(stats.tokens_per_s)
    return speeds[1:]


def main(argv: list[str] | None = None) -> int:
    from bench.common import load_average, median, pin_threads, quiet_transformers

    parser = argparse.ArgumentParser(prog="python -m bench.models",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", default="medium", choices=sorted(CHECKPOINTS))
    args = parser.parse_args(argv)
    pin_threads(1)
    quiet_transformers()
    path = ensure_checkpoint(args.name)
    print(f"{args.name}: {path}; {parameter_count(path) / 1e6:.1f} M parameters")
    before = load_average()
    speeds = decode_speed(path)
    print("decode tokens/s (1 thread):", ", ".join(f"{s:.1f}" for s in speeds),
          f"(median {median(speeds):.1f}); load average before {before}, "
          f"after {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
