"""Training LoRA adapters on the feedback the studio collected.

`training.train` turns the consented examples of the store's train split (built by the
export, `exports.formats`) into a PEFT LoRA adapter with TRL's trainers; it is
`python app.py train`. It knows the engine (to load the base model the way the app does) and
the store, never the UI.
"""
