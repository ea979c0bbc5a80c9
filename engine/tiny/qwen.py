"""The Qwen chat template and token names of the benchmarks' hand-sized checkpoints.

The tiny checkpoints the app and tests use are built from the real Hub files by
`engine.tiny.hub`; `bench/models.py` rebuilds the published Qwen3.5 sizes with random weights
and a small trained vocabulary, and takes its template and token names from here.
"""

from __future__ import annotations

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
EOS_TOKENS = ("<|im_end|>", "<|endoftext|>")

# Qwen chat format. Images become vision_start/image_pad/vision_end; earlier assistant turns lose
# their reasoning, as in the Qwen templates. With thinking (Qwen3.5 and the Qwen3-VL thinking
# models) the generation prompt opens a think block, or writes an empty one when
# enable_thinking is false.
_CONTENT_MACRO = """\
{%- macro render_content(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}\
<|vision_start|><|image_pad|><|vision_end|>
{%- elif part.type == 'video' or 'video' in part -%}<|vision_start|><|video_pad|><|vision_end|>
{%- elif part.type == 'text' -%}{{ part.text }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
"""
_TURNS = """\
{%- for message in messages -%}
{%- if message.role == 'assistant' -%}
{%- set text = render_content(message.content) -%}
{%- if '</think>' in text -%}
{%- set text = text.split('</think>')[-1].lstrip('\\n') -%}
{%- endif -%}
{{ '<|im_start|>assistant\\n' + text + '<|im_end|>\\n' }}
{%- else -%}
{{ '<|im_start|>' + message.role + '\\n' }}
{{- render_content(message.content) -}}
{{ '<|im_end|>\\n' }}
{%- endif -%}
{%- endfor -%}
"""
THINKING_TEMPLATE = (
    _CONTENT_MACRO
    + _TURNS
    + """\
{%- if add_generation_prompt -%}
{{ '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false -%}
{{ '<think>\\n\\n</think>\\n\\n' }}
{%- else -%}
{{ '<think>\\n' }}
{%- endif -%}
{%- endif -%}
"""
)
