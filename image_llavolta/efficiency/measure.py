"""Measuring a prefill: time to first token, decode tokens/s, peak memory, the DeepSpeed profiler's FLOP count.

A setting is None (the stock model) or a `CompressionSpec`; the model is a compressed one (`enable_compression`).

- Prefill = the forward `generate` runs first: the whole prompt, KV cache on, logits of the last position only
  (`logits_to_keep=1`), vision encoders and projector included. The stock setting runs the stock transformers
  class's own forward, so a no-op spec's time against it is the whole cost of the compressor's dispatch.
- TTFT: one prefill and the argmax that yields the first token on the host.
- Decode: greedy `generate` of `new_tokens` tokens; rate = (new_tokens − 1) / (time of the last token − time of
  the first), per sequence.
- Timing rounds: settings run interleaved, round by round, each round in a shuffled order, so that none always
  runs first or right after another; medians over the rounds after the warm-up ones.
- Peak memory: of one prefill (`peak_bytes`: of any step), above what was allocated before it (weights and
  inputs excluded). CUDA: `torch.cuda.max_memory_allocated`. CPU: the torch CPU allocator's running total, read
  from `torch.profiler(profile_memory=True)` allocation events: tensor bytes only, not process RSS.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from ..compression import CompressionSpec, CompressionStats

Setting = CompressionSpec | None


def prefill(model, inputs: dict, spec: Setting):
    """One prefill (see the module note); None runs the stock class's forward, a spec the compressed one."""
    if spec is None:
        return model.stock_class.forward(model, **inputs, use_cache=True, logits_to_keep=1)
    return model(**inputs, compression=spec, use_cache=True, logits_to_keep=1)


def accounting(model, inputs: dict, spec: Setting) -> CompressionStats:
    """The visual-token accounting of a prefill with `spec` (tokens in and out, #Tokens, Eq. 3)."""
    return model(**inputs, compression=spec, use_cache=True, logits_to_keep=1, output_compression=True).compression


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_to_first_token(model, inputs: dict, spec: Setting) -> float:
    """Seconds of one prefill and the argmax that yields the first token."""
    device = inputs["input_ids"].device
    _sync(device)
    start = time.perf_counter()
    out = prefill(model, inputs, spec)
    out.logits[:, -1].argmax(-1).tolist()  # the first token on the host, as a caller would see it
    _sync(device)
    return time.perf_counter() - start


class _TokenClock:
    """A generate streamer that notes when each put arrives: the prompt, then every new token."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def _pad_token_id(model) -> int:
    for source in (model.generation_config, model.config.get_text_config(decoder=True), model.config):
        value = getattr(source, "pad_token_id", None)
        if value is not None:
            return value
    return 0


def decode_tokens_per_second(model, inputs: dict, spec: Setting, new_tokens: int) -> float:
    """Greedy generate of `new_tokens` tokens; decode tokens/s per sequence after the first token."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 to time decoding, got {new_tokens}")
    clock = _TokenClock()
    model.generate(
        **inputs,
        compression=spec,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=_pad_token_id(model),
        streamer=clock,
    )
    if len(clock.times) != new_tokens + 1:
        raise RuntimeError(f"generate streamed {len(clock.times) - 1} tokens, expected {new_tokens}")
    return (new_tokens - 1) / (clock.times[-1] - clock.times[1])


def timing_rounds(
    jobs: Mapping[str, Callable[[], Mapping[str, float]]], rounds: int, warmup: int, seed: int = 0
) -> dict[str, dict[str, list[float]]]:
    """Run every job once per round, interleaved in a shuffled order; {job: {measure: values of the timed rounds}}.

    Each job returns its measurements of one run, e.g. {"ttft": seconds}; the first `warmup` rounds are not kept.
    """
    if rounds < 0 or warmup < 0:
        raise ValueError(f"rounds and warmup must be >= 0, got rounds={rounds}, warmup={warmup}")
    results: dict[str, dict[str, list[float]]] = {name: {} for name in jobs}
    order = list(jobs)
    shuffle = random.Random(seed).shuffle
    for r in range(warmup + rounds if rounds else 0):
        shuffle(order)
        for name in order:
            measured = jobs[name]()
            if r >= warmup:
                for key, value in measured.items():
                    results[name].setdefault(key, []).append(value)
    return results


def paired_speedup(reference: list[float], times: list[float]) -> float:
    """Median over rounds of reference time / time, both timed in the same round (robust to load drifting)."""
    return statistics.median(a / b for a, b in zip(reference, times, strict=True))


def _cpu_peak_bytes(fn) -> int:
    """Peak bytes of CPU tensors allocated while `fn` runs, above those live before (torch profiler events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    stack, events = list(prof.profiler.kineto_results.experimental_event_tree()), []
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            events.append(event)
    if not events:
        return 0
    events.sort(key=lambda e: e.start_time_ns)
    first = events[0].extra_fields
    # the allocator's running total counts only what was allocated while profiling: start from its first value
    base = first.total_allocated - first.alloc_size
    return max(e.extra_fields.total_allocated for e in events) - base


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak tensor memory on `device` while `fn` runs, above what was allocated before it (see the module note)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _cpu_peak_bytes(fn)


def peak_memory_bytes(model, inputs: dict, spec: Setting) -> int:
    """Peak tensor memory of one prefill above what was allocated before it (see the module note)."""
    with torch.no_grad():
        return peak_bytes(lambda: prefill(model, inputs, spec), next(model.parameters()).device)


def memory_method(device: torch.device) -> str:
    """What `peak_memory_bytes` measures on `device`, for reports."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated during one prefill, minus memory_allocated before it"
    return (
        "CPU tensor bytes: peak of the torch CPU allocator's running total during one prefill, minus its value "
        "before (torch.profiler profile_memory allocation events); not process RSS"
    )


def _parts(model) -> dict[str, list]:
    """The model's modules by part: the projector, the decoder with its LM head, and the vision encoders (the rest)."""
    inner = model.model
    named = dict(inner.named_children())
    return {
        "vision": [m for name, m in named.items() if name not in ("multi_modal_projector", "language_model")],
        "projector": [named["multi_modal_projector"]] if "multi_modal_projector" in named else [],  # Qwen: in the tower
        "language_model": [named["language_model"], model.lm_head],
    }


def profiled_flops(model, inputs: dict, spec: Setting) -> dict[str, dict[str, int]]:
    """FLOPs and MACs of one prefill as the DeepSpeed flops profiler counts them, total and per part.

    The profiler patches torch functions (F.linear, matmul, SDPA, conv, norms, activations) and hooks every
    module; `other` is what ran outside the named parts (the compressed pass itself: pooling has no matmul).
    """
    # imported here: importing deepspeed probes for accelerators and takes seconds, which only profiling needs
    from deepspeed.profiling.flops_profiler.profiler import FlopsProfiler, get_module_flops, get_module_macs

    profiler = FlopsProfiler(model)
    profiler.start_profile()
    try:
        with torch.no_grad():
            model(**inputs, compression=spec, use_cache=True, logits_to_keep=1)  # through the hooked top module
        result = {"flops": {}, "macs": {}}
        for name, modules in _parts(model).items():
            result["flops"][name] = sum(get_module_flops(m) for m in modules)
            result["macs"][name] = sum(get_module_macs(m) for m in modules)
        for key, total in (("flops", profiler.get_total_flops()), ("macs", profiler.get_total_macs())):
            result[key]["other"] = total - sum(result[key].values())
            result[key]["total"] = total
    finally:
        profiler.end_profile()
    return result
