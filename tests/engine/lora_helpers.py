"""The LoRA helpers under their former name, for importers not yet moved to `testing.lora`."""

from testing.lora import prompt_inputs, text_model_linears, train_lora

__all__ = ["prompt_inputs", "text_model_linears", "train_lora"]
