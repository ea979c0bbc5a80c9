"""Training data from what the studio stored: examples, trainer files and Hub pushes.

`exports.examples` decides which judgements make which example (DPO pairs, KTO labels, SFT
demonstrations), with the split by conversation; `exports.formats` writes them in the files
ms-swift, TRL and LLaMA-Factory read (`python app.py export`); `exports.push` uploads them to a
dataset repository. It reads the store's public API and knows neither models nor Gradio: the
trainer (`training/`) and the evaluation (`evaluation/`) both build on it.
"""
