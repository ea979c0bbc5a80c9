"""Tiny random checkpoints built from the real Hub files of the checkpoints the app targets.

The published text files of those checkpoints (config, chat template, tokenizer files,
processor and generation configs; no weights) ship with the engine in `engine/hub/<owner>__<name>/`
(its README.md says where each came from), so a fresh clone or an installed copy builds them
offline; $VQA_STUDIO_HUB points elsewhere, for a newer copy of those files. Each `build_*`
function here reads one of them at build time and writes a checkpoint that keeps everything
but the sizes: the real `config.json` with its widths, depths and head counts shrunk (token
ids, context length, vocabulary size, rotary and vision settings kept), the real chat template,
tokenizer (the real files where they exist; for Qwen3.5, whose `vocab.json` is not published
in the folder, a vocabulary rebuilt from its real `merges.txt` with the real special tokens at
their real ids), processor settings and `generation_config.json`.

Two things differ from the real checkpoints, on purpose: input and output embeddings are kept
apart (a random model with tied embeddings mostly repeats its last input token), and the output
rows of control and unprintable tokens are zeroed (`engine.tiny.common.silence_tokens`), so greedy
answers are visible text. Called only by `engine.tiny.ensure_tiny`, which owns caching.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.tiny.common import seed_everything, silence_tokens, unprintable_ids
from engine.tiny.sizes import (
    LINEAR_ATTENTION_SIZES,
    QWEN_VISION_SIZES,
    TEXT_SIZES,
    VISION_SIZES,
)

HUB_FILES = Path(__file__).resolve().parent.parent / "hub"

QWEN3_5 = "Qwen__Qwen3.5-0.8B"
QWEN3_VL = "Qwen__Qwen3-VL-4B-Instruct"
QWEN2_5_VL = "Qwen__Qwen2.5-VL-3B-Instruct"
LLAVA = "llava-hf__llava-1.5-7b-hf"
SMOLVLM_256M = "HuggingFaceTB__SmolVLM-256M-Instruct"
BLIP2 = "Salesforce__blip2-opt-2.7b"
RECONSTRUCTED = "_reconstructed"

# Qwen3.5 4B/9B think unless told not to; 0.8B/2B only when asked. Qwen3-VL Thinking always
# opens a think block. No Hub copy of these templates was found; these are rebuilt copies.
QWEN3_5_LARGE_TEMPLATE = "qwen3_5_4b_9b_chat_template.jinja"
QWEN3_VL_THINKING_TEMPLATE = "qwen3_vl_thinking_chat_template.jinja"
OVIS2_TEMPLATE = "ovis2_hf_convert_script_template.jinja"
LLAVA_ONEVISION_TEMPLATE = "llava_onevision_convert_script_template.jinja"

# Sampling defaults of the other Qwen3.5 sizes' generation_config.json (the 0.8B one is not in
# the hub folder); see its README.
QWEN3_5_GENERATION = {
    "do_sample": True,
    "temperature": 0.6,
    "top_k": 20,
    "top_p": 0.95,
    "eos_token_id": [248046, 248044],
    "pad_token_id": 248044,
}

def hub_dir() -> Path:
    """The folder of real Hub files; a clear error when it is not there."""
    configured = os.environ.get("VQA_STUDIO_HUB")
    path = Path(configured) if configured else HUB_FILES
    if not path.is_dir():
        raise FileNotFoundError(
            f"The real Hub files the tiny checkpoints are built from are not at {path}. "
            "Restore engine/hub from the repository, or set VQA_STUDIO_HUB to a folder "
            "holding them.")
    return path


def hub_files(name: str) -> Path:
    """The folder of one real checkpoint's files."""
    folder = hub_dir() / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing from the real Hub files.")
    return folder


def reconstructed_template(name: str) -> str:
    return (hub_files(RECONSTRUCTED) / name).read_text()


def real_template(name: str) -> str:
    """The chat template of a real checkpoint as its processor would load it."""
    folder = hub_files(name)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    return json.loads((folder / "chat_template.json").read_text())["chat_template"]


def _config(name: str) -> dict:
    return json.loads((hub_files(name) / "config.json").read_text())


def _shrunk(section: dict, sizes: dict) -> dict:
    """`section` with the given sizes, everything else as it was."""
    return {**section, **sizes}


def _mrope(section: list[int], half_rotary: int) -> list[int]:
    """A multimodal rotary split of `half_rotary` in the proportions of the real one."""
    total = sum(section)
    scaled = [max(1, round(part * half_rotary / total)) for part in section]
    scaled[0] += half_rotary - sum(scaled)
    return scaled


def _save(folder: Path, model, processor, generation: dict | None, source: str) -> None:
    """Quiet control tokens, attach the real generation config, write the checkpoint."""
    from transformers import GenerationConfig

    tokenizer = processor.tokenizer
    silent = list(tokenizer.added_tokens_decoder)
    silent += [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens]
    # Ids past the tokenizer's end exist in the real embedding matrices too (padding to a
    # multiple); they decode to nothing.
    rows = model.get_output_embeddings().weight.shape[0]
    silent += list(range(len(tokenizer), rows))
    silence_tokens(model, silent + unprintable_ids(tokenizer))
    if generation is None:
        generation = json.loads((hub_files(source) / "generation_config.json").read_text())
    generation = {k: v for k, v in generation.items()
                  if k not in ("transformers_version", "_from_model_config")}
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    # Which real checkpoint's files this one was built from.
    (folder / "REAL_SOURCE.txt").write_text(f"{source}\n")


def _model(config_class, model_class, config: dict):
    config.pop("architectures", None)
    config["tie_word_embeddings"] = False
    if isinstance(config.get("text_config"), dict):
        config["text_config"]["tie_word_embeddings"] = False
    seed_everything()
    return model_class(config_class.from_dict(config)).eval()


# -- Qwen ------------------------------------------------------------------------------------


def _qwen_vision(vision: dict) -> dict:
    return {**vision, **QWEN_VISION_SIZES, "out_hidden_size": TEXT_SIZES["hidden_size"]}


def _qwen3_vl_config() -> dict:
    config = _config(QWEN3_VL)
    text = _shrunk(config["text_config"], TEXT_SIZES)
    rope = dict(text.pop("rope_scaling"))
    rope["rope_theta"] = text.pop("rope_theta")
    rope["mrope_section"] = _mrope(rope["mrope_section"], TEXT_SIZES["head_dim"] // 2)
    text["rope_parameters"] = rope
    config["text_config"] = text
    vision = _qwen_vision(config["vision_config"])
    vision["deepstack_visual_indexes"] = [0]
    config["vision_config"] = vision
    return config


def _build_qwen3_vl(folder: Path, template: str | None) -> None:
    from transformers import AutoProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(hub_files(QWEN3_VL))
    if template is not None:
        processor.chat_template = template
        processor.tokenizer.chat_template = template
    model = _model(Qwen3VLConfig, Qwen3VLForConditionalGeneration, _qwen3_vl_config())
    _save(folder, model, processor, None, QWEN3_VL)


def build_qwen3_vl(folder: Path) -> None:
    """Qwen3-VL Instruct: never thinks, ignores enable_thinking."""
    _build_qwen3_vl(folder, None)


def build_qwen3_vl_thinking(folder: Path) -> None:
    """Qwen3-VL Thinking: the Instruct checkpoint's files with the Thinking template, which
    always opens a think block."""
    _build_qwen3_vl(folder, reconstructed_template(QWEN3_VL_THINKING_TEMPLATE))


def build_qwen2_5_vl(folder: Path) -> None:
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = _config(QWEN2_5_VL)
    config.update({k: v for k, v in TEXT_SIZES.items() if k != "head_dim"})
    config["max_window_layers"] = TEXT_SIZES["num_hidden_layers"]
    rope = dict(config["rope_scaling"])
    head_dim = TEXT_SIZES["hidden_size"] // TEXT_SIZES["num_attention_heads"]
    rope["mrope_section"] = _mrope(rope["mrope_section"], head_dim // 2)
    config["rope_scaling"] = rope
    vision = _qwen_vision(config["vision_config"])
    vision["fullatt_block_indexes"] = [1]
    config["vision_config"] = vision
    processor = AutoProcessor.from_pretrained(hub_files(QWEN2_5_VL))
    model = _model(Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, config)
    _save(folder, model, processor, None, QWEN2_5_VL)


def _qwen3_5_tokenizer(template: str):
    """The Qwen3.5 tokenizer from its real merges, with its special tokens at their real ids.

    The published vocab.json is not in the hub folder. In the Qwen byte-level vocabularies
    (checked on Qwen2.5-VL's files) the 256 byte symbols come first, in GPT-2 order, and every
    merge's result follows at 256 + its line number; the ids between the last merge and the
    first special token are unknown and hold unreachable placeholders.
    """
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

    folder = hub_files(QWEN3_5)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    vocab = {symbol: index for index, symbol in enumerate(_byte_symbols())}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    added = {int(k): v for k, v in settings["added_tokens_decoder"].items()}
    first_special = min(added)
    for index in range(len(vocab), first_special):
        vocab[f"<|unused_{index}|>"] = index
    tokenizer = Qwen3_5Tokenizer(vocab=vocab, merges=merges)
    # Added one by one in id order: each lands at the next id, its real one.
    from tokenizers import AddedToken

    for token_id in sorted(added):
        entry = added[token_id]
        token = AddedToken(entry["content"], special=entry["special"], normalized=False,
                           lstrip=entry.get("lstrip", False), rstrip=entry.get("rstrip", False),
                           single_word=entry.get("single_word", False))
        if entry["special"]:
            tokenizer.add_special_tokens({"additional_special_tokens": [token]},
                                         replace_extra_special_tokens=False)
        else:
            tokenizer.add_tokens([token])
        assert tokenizer.convert_tokens_to_ids(entry["content"]) == token_id, entry
    tokenizer.add_special_tokens({"eos_token": settings["eos_token"],
                                  "pad_token": settings["pad_token"]})
    tokenizer.chat_template = template
    return tokenizer


def _byte_symbols() -> list[str]:
    """The 256 byte symbols of byte-level BPE, in GPT-2's order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    symbols = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in printable] + [
        symbols[byte] for byte in range(256) if byte not in printable]


def _build_qwen3_5(folder: Path, template: str) -> None:
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3_5Config,
        Qwen3_5ForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    files = hub_files(QWEN3_5)
    tokenizer = _qwen3_5_tokenizer(template)

    def settings(name: str) -> dict:
        data = json.loads((files / name).read_text())
        return {k: v for k, v in data.items()
                if k not in ("processor_class", "image_processor_type", "video_processor_type")}

    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**settings("preprocessor_config.json")),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**settings("video_preprocessor_config.json")),
        chat_template=template,
    )
    config = _config(QWEN3_5)
    text = _shrunk(config["text_config"], {
        **TEXT_SIZES,
        "num_hidden_layers": 4,
        "layer_types": config["text_config"]["layer_types"][:4],
        **LINEAR_ATTENTION_SIZES,
    })
    rope = dict(text["rope_parameters"])
    rotary = int(TEXT_SIZES["head_dim"] * rope.get("partial_rotary_factor", 1.0))
    rope["mrope_section"] = _mrope(rope["mrope_section"], rotary // 2)
    text["rope_parameters"] = rope
    config["text_config"] = text
    vision = _qwen_vision(config["vision_config"])
    vision["num_position_embeddings"] = 256
    config["vision_config"] = vision
    model = _model(Qwen3_5Config, Qwen3_5ForConditionalGeneration, config)
    _save(folder, model, processor, QWEN3_5_GENERATION, QWEN3_5)


def build_qwen3_5(folder: Path) -> None:
    """Qwen3.5 0.8B / 2B: thinks only when asked (the real template)."""
    _build_qwen3_5(folder, real_template(QWEN3_5))


def build_qwen3_5_large(folder: Path) -> None:
    """Qwen3.5 4B / 9B: thinks unless told not to (rebuilt template)."""
    _build_qwen3_5(folder, reconstructed_template(QWEN3_5_LARGE_TEMPLATE))


# -- LLaVA, SmolVLM (idefics3), BLIP-2 ---------------------------------------------------


def build_llava(folder: Path) -> None:
    """LLaVA-1.5: CLIP ViT-L/14 at 336 px (576 image tokens) and Vicuna, both shrunk."""
    from transformers import AutoProcessor, LlavaConfig, LlavaForConditionalGeneration

    config = _config(LLAVA)
    config["text_config"] = _shrunk(config["text_config"], TEXT_SIZES)
    config["vision_config"] = _shrunk(config["vision_config"],
                                      {**VISION_SIZES, "projection_dim": 32})
    processor = AutoProcessor.from_pretrained(hub_files(LLAVA))
    model = _model(LlavaConfig, LlavaForConditionalGeneration, config)
    _save(folder, model, processor, None, LLAVA)


def build_idefics3(folder: Path) -> None:
    """SmolVLM-256M-Instruct, an idefics3 checkpoint: SigLIP at 512 px tiles and SmolLM2."""
    from transformers import AutoProcessor, Idefics3Config, Idefics3ForConditionalGeneration

    config = _config(SMOLVLM_256M)
    config["text_config"] = _shrunk(config["text_config"], TEXT_SIZES)
    config["vision_config"] = _shrunk(config["vision_config"], VISION_SIZES)
    processor = AutoProcessor.from_pretrained(hub_files(SMOLVLM_256M))
    model = _model(Idefics3Config, Idefics3ForConditionalGeneration, config)
    _save(folder, model, processor, None, SMOLVLM_256M)


def build_blip2(folder: Path) -> None:
    """BLIP-2 OPT-2.7b: ViT, Q-Former (32 queries) and OPT, shrunk; answers end with a newline
    (its eos is 50118, "\\n")."""
    from transformers import AutoProcessor, Blip2Config, Blip2ForConditionalGeneration

    config = _config(BLIP2)
    config["vision_config"] = _shrunk(config["vision_config"], VISION_SIZES)
    config["qformer_config"] = _shrunk(config["qformer_config"], {
        **VISION_SIZES,
        "encoder_hidden_size": VISION_SIZES["hidden_size"],
        "vocab_size": 64,  # token embeddings unused: no Q-Former text input
    })
    text = config["text_config"]
    # OPT names the decoder sizes its own way.
    config["text_config"] = {**text, "hidden_size": TEXT_SIZES["hidden_size"],
                             "word_embed_proj_dim": TEXT_SIZES["hidden_size"],
                             "ffn_dim": TEXT_SIZES["intermediate_size"],
                             "num_hidden_layers": TEXT_SIZES["num_hidden_layers"],
                             "num_attention_heads": TEXT_SIZES["num_attention_heads"]}
    processor = AutoProcessor.from_pretrained(hub_files(BLIP2))
    model = _model(Blip2Config, Blip2ForConditionalGeneration, config)
    _save(folder, model, processor, None, BLIP2)

