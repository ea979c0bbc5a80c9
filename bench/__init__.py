"""Benchmarks: what the studio costs on top of the model, and how it holds many users.

Each module runs with one command from the repository root and prints Markdown tables:

- `python -m bench.overhead`     raw `LocalEngine.stream` vs the running app through
                                 `gradio_client` (lean and/or stock), at two engine speeds;
- `python -m bench.concurrency`  1-16 simulated users against the running app, answers one at
                                 a time and batched, at several answer lengths, beside the
                                 engine in-process;
- `python -m bench.batching`     1-16 users against the engine in-process, one at a time and
                                 batched, with the batching targets;
- `python -m bench.storage`      logging a turn, concurrent writers, exporting many pairs;
- `python -m bench.peer`         the same workload through `transformers serve` (with and
                                 without continuous batching) and the local engine;
- `python -m bench.gpu`          full-size Qwen3.5 configs on a CUDA machine (config check only
                                 elsewhere);
- `python -m bench.models`       builds (and times) the larger random checkpoint.

`bench.workload` holds the one question they all ask, `bench.models` the checkpoints they
ask it of (`model_path`), `bench.common` the machine report, tables, the app as a subprocess
and the client that asks it. Figures and how to read them are in docs/benchmarks.md.
Nothing here is imported by the app.
"""
