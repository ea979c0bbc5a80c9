"""Answer one question through the real `spaces` package in ZeroGPU mode, as the app does.

Run as a script (the package reads its mode from the environment when first imported): it
serves the device API on 127.0.0.1 (tests/app/zerogpu_api.py), imports `spaces` first, builds
the engine from the app's own settings, loads the tiny model onto the emulated GPU on this
thread, and streams one greedy answer through `ZeroGPUEngine`, which the package runs in a
forked worker attached to the GPU (ZEROGPU_TEST_QUOTA_LEFT=N: the API refuses durations over
N seconds, as for a visitor with that much quota left). Prints one JSON object: the answer, its
finish reason or error, the device the model was loaded on and the API calls made.
ZEROGPU_TEST_STOP=1: 400 tokens are asked for, and Stop is pressed at the first one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _gpu_uuid() -> str:
    """The GPU the device API lends: this machine's first one, as the real service names it."""
    from tests.app.zerogpu_api import GPU_UUID

    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=60).stdout.split()
    except OSError:  # no NVIDIA driver: the worker will fail to attach, as it should
        return GPU_UUID
    return listed[0] if listed else GPU_UUID


def main() -> None:
    from tests.app.zerogpu_api import ZeroGPUApi

    quota_left = os.environ.get("ZEROGPU_TEST_QUOTA_LEFT")
    api = ZeroGPUApi(gpu_uuid=_gpu_uuid(),
                     quota_left=int(quota_left) if quota_left else None).start()
    work = Path(tempfile.mkdtemp(prefix="zerogpu-"))
    (work / "cgroup").write_text("0::/zerogpu-test\n")
    os.environ.update({
        "SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": api.url,
        "ZEROGPU_PROC_SELF_CGROUP_PATH": str(work / "cgroup"),
        "ZEROGPU_OFFLOAD_DIR": str(work / "offload"),
        "ZEROGPU_MMAP_AUTOPRUNE_PATTERN": str(work / "no-such-cache" / "*")})
    from engine import zerogpu

    zerogpu.enable()
    import app
    from engine.types import GenerationRequest, Message, Sampling

    settings = app.settings_from(["--model", "tiny-random"], dict(os.environ))
    engine = zerogpu.ZeroGPUEngine(app.build_engine(settings, batching=False, in_process=True))
    report = engine.load()
    stop = os.environ.get("ZEROGPU_TEST_STOP") == "1"
    request = GenerationRequest((Message("user", "Describe the sky."),),
                                sampling=Sampling(max_new_tokens=400 if stop else 16,
                                                  temperature=0.0))
    answer, done = "", None
    for event in engine.stream(request):
        if event.kind == "answer":
            if stop and not answer:
                engine.cancel(request.request_id)
            answer += event.text
        elif event.kind == "done":
            done = event
    api.stop()
    print(json.dumps({
        "device": report.device, "quantization": report.quantization, "answer": answer,
        "answer_tokens": done.stats.answer_tokens if done and done.stats else None,
        "finish_reason": done.stats.finish_reason if done and done.stats else None,
        "error": done.error if done else None, "calls": api.calls, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
