"""The redundancy probe (paper §4.2, Fig. 1): a test-time pooling sweep and the answer position's attention.

Both run on a trained checkpoint, without training, and know nothing of the data: the caller supplies an
`evaluate(spec) -> {"accuracy": ...}` callable for the sweep and encoded samples for the attention profile
(`video_llavolta.probe` wires them to video QA).

Sweep. Points are the stock model (no compression) and every (layer K, stride S) of a grid. Each point's x is
the share of visual tokens kept over the whole decoder:

    share_kept = Σ_layers visual tokens / (N·L) = (K'·L + (N−K')·L_out) / (N·L) = 1 / CR (Eq. 3)

with N decoder layers, L visual tokens in, L_out = Σ_segments ceil(len/S) after pooling (each image or frame
pooled on its own, a last partial window kept) and K' = min(K, N). The stock point keeps 1.0. The sweep JSON is
rewritten after every point; a rerun skips points already finished in it, retries failed ones, and refuses a
file written with other settings.

Attention profile. For each sample, one stock forward with `output_hidden_states=True` (the model's attention
implementation, SDPA or FlashAttention, stays in charge), then for every decoder layer l the attention row of
the answer position (the last prompt token, which predicts the first answer token) is recomputed from layer l's
input by `query_attention`: no eager attention, no L×L maps. The probability mass on each region of the prompt
(visual tokens, the system message, BOS, the rest) is averaged over heads, then over samples; so is the mass per
token (a region's mass over its token count), since the paper's point is density: many visual tokens each get
little attention.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from .compression import CompressionSpec, CompressionStats, pooled_length
from .compression.scores import query_attention
from .conversation import Template
from .inputs import collate
from .jsonio import check_settings, read_json, write_json
from .tables import format_table, percent

logger = logging.getLogger(__name__)

STOCK = "stock"
SHARE_KEPT_DEFINITION = (
    "share of visual tokens kept = visual tokens summed over all decoder layers / (N·L) = 1/CR (Eq. 3): "
    "(K'·L + (N−K')·L_out) / (N·L), K' = min(K, N), L_out = Σ over images/frames of ceil(tokens/S); stock = 1"
)
ANSWER_POSITION = "the last prompt token (the position that predicts the first answer token)"
REGIONS = ("visual", "system", "bos")  # named prompt regions; "rest" is every other real token
REGION_DEFINITIONS = {
    "visual": "image / video placeholder tokens (the visual features)",
    "system": "the template's system message: the tokens before the first user turn, BOS excluded",
    "bos": "the BOS token (an attention sink: reported apart from the system message)",
    "rest": "every other prompt token: role names, the question, separators",
}


# ---------------------------------------------------------------------------------------------------
# The sweep


def point_name(spec: CompressionSpec | None) -> str:
    """'stock' for no compression, else 'K2_S8' (with '_<method>' for a method other than average pooling)."""
    if spec is None:
        return STOCK
    name = f"K{spec.layer}_S{spec.stride}"
    return name if spec.method == "avgpool" else f"{name}_{spec.method}"


def _int_list(values: Sequence[int], what: str) -> list[int]:
    values = list(values)
    if not values:
        raise ValueError(f"the sweep needs at least one {what}")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise ValueError(f"{what}s must be ints, got {bad}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what}s {values} repeat {repeated}")
    return values


def sweep_grid(
    layers: Sequence[int], strides: Sequence[int], num_layers: int, method: str = "avgpool", stock: bool = True
) -> list[CompressionSpec | None]:
    """The stock point (None) first if asked, then CompressionSpec(K, S) for every K in `layers`, S in `strides`."""
    layers, strides = _int_list(layers, "layer"), _int_list(strides, "stride")
    grid = [CompressionSpec(k, s, method) for k in layers for s in strides]
    for spec in grid:
        spec.check_fits(num_layers)
    return ([None] if stock else []) + grid


def sample_stats(num_layers: int, spec: CompressionSpec | None, segment_lengths: Sequence[int]) -> CompressionStats:
    """The accounting a forward with `spec` reports for one sample whose visual segments have these lengths.

    `segment_lengths` are the visual tokens of each image or video frame of the sample; each is pooled on its
    own, a last partial window kept. None (the stock model) keeps every token in every layer.
    """
    return samples_stats(num_layers, spec, [segment_lengths])


def samples_stats(num_layers: int, spec: CompressionSpec | None, samples: Sequence[Sequence[int]]) -> CompressionStats:
    """The accounting of a batch of samples, each with its own segment lengths (see `sample_stats`)."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    samples = [list(lengths) for lengths in samples]
    for lengths in samples:
        if not lengths or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in lengths):
            raise ValueError(f"segment_lengths must be positive token counts, got {lengths}")
    if not samples:
        raise ValueError("no samples to account for")
    if spec is not None:
        spec.check_fits(num_layers)
    layer, stride = (0, 1) if spec is None else (spec.layer, spec.stride)
    pooled = [sum(pooled_length(n, stride) for n in lengths) for lengths in samples]
    return CompressionStats(
        num_layers, layer, stride, torch.tensor([sum(lengths) for lengths in samples]), torch.tensor(pooled)
    )


def share_kept(num_layers: int, spec: CompressionSpec | None, segment_lengths: Sequence[int]) -> float:
    """Visual tokens summed over the decoder's layers / (N·L): 1/CR of Eq. 3 (1.0 for None, the stock model)."""
    return share_kept_from_stats(sample_stats(num_layers, spec, segment_lengths))


def share_kept_from_stats(stats: CompressionStats) -> float:
    """The same share, from a forward's own accounting: 1 / its compression ratio."""
    if stats.tokens_in == 0:
        raise ValueError("the forward had no visual tokens: the share kept is undefined")
    return 1 / stats.ratio


def _point_record(spec, num_layers, segment_lengths) -> dict:
    per_sample = bool(segment_lengths) and isinstance(segment_lengths[0], list)
    stats = samples_stats(num_layers, spec, segment_lengths if per_sample else [segment_lengths])
    return {
        "name": point_name(spec),
        "stock": spec is None,
        "layer": None if spec is None else spec.layer,
        "stride": None if spec is None else spec.stride,
        "method": None if spec is None else spec.method,
        "share_kept": share_kept_from_stats(stats),
        "compression_ratio": stats.ratio,
        "tokens_over_layers": stats.tokens_over_layers,
    }


def run_sweep(
    points: Sequence[CompressionSpec | None],
    evaluate: Callable[[CompressionSpec | None], Mapping],
    path: str | os.PathLike,
    num_layers: int,
    segment_lengths: Sequence[int],
    settings: Mapping | None = None,
) -> dict:
    """Evaluate every point not yet finished in the sweep JSON `path`; returns the sweep (also written to `path`).

    `segment_lengths`: one sample's visual segment lengths, standing for every sample (a family whose token counts
    are fixed), or a list of them per sample (one whose counts depend on each video), summed over the samples.
    `evaluate(spec)` returns metrics with an "accuracy" (a fraction, or None when nothing was judged); an
    exception fails that point only: it is recorded with its error and retried on the next run. Points of
    earlier runs that are not in `points` are kept. `settings` (JSON-ready) must match the file's.
    """
    path = os.fspath(path)
    segment_lengths = [
        [int(n) for n in lengths] if isinstance(lengths, Sequence) else int(lengths) for lengths in segment_lengths
    ]
    settings = dict(settings or {})
    identity = {"settings": settings, "num_layers": num_layers, "visual_segments": segment_lengths}
    records: dict[str, dict] = {}
    if os.path.exists(path):
        stored = read_json(path, "sweep")
        check_settings(path, {k: stored.get(k) for k in identity}, identity, "a sweep")
        for record in stored.get("points", []):
            records[record["name"]] = record
    names = [point_name(spec) for spec in points]
    if len(set(names)) != len(names):
        raise ValueError(f"the sweep repeats points: {names}")

    counts = {"points": len(points), "resumed": 0, "evaluated": 0, "failed": 0}

    def save(status: str) -> dict:
        ordered = [records[n] for n in names if n in records] + [r for n, r in records.items() if n not in names]
        sweep = {
            **identity,
            "share_kept_definition": SHARE_KEPT_DEFINITION,
            "status": status,
            "counts": counts,
            "points": ordered,
        }
        write_json(path, sweep)
        return sweep

    for number, spec in enumerate(points, 1):
        name = names[number - 1]
        done = records.get(name)
        if done is not None and done.get("status") == "ok":
            counts["resumed"] += 1
            continue
        record = _point_record(spec, num_layers, segment_lengths)
        logger.info(
            "sweep point %d/%d: %s (%.1f%% of visual tokens kept)",
            number,
            len(points),
            name,
            100 * record["share_kept"],
        )
        started = time.perf_counter()
        try:
            metrics = dict(evaluate(spec))
            if "accuracy" not in metrics:
                raise ValueError(f"evaluate() returned no 'accuracy' (keys: {sorted(metrics)})")
            accuracy = metrics["accuracy"]
            if accuracy is not None and (isinstance(accuracy, bool) or not isinstance(accuracy, (int, float))):
                raise ValueError(f"evaluate() must return an 'accuracy' number or None, got {accuracy!r}")
            record.update(status="ok", accuracy=accuracy, metrics=metrics, error=None)
            counts["evaluated"] += 1
        except Exception as err:  # one bad point (out of memory, a broken file) must not lose the others
            logger.warning("sweep point %s failed: %s: %s", name, type(err).__name__, err, exc_info=True)
            record.update(status="failed", accuracy=None, metrics=None, error=f"{type(err).__name__}: {err}")
            counts["failed"] += 1
        record["seconds"] = round(time.perf_counter() - started, 3)
        records[name] = record
        save("running")
    return save("complete" if counts["failed"] == 0 else "incomplete")


def format_sweep(sweep: Mapping) -> str:
    """The sweep as a table, one row per point, with the errors of failed points below it."""
    c = sweep["counts"]
    rows = [
        [
            p["name"],
            None if p["stock"] else p["layer"],
            None if p["stock"] else p["stride"],
            percent(p["share_kept"]),
            f"{p['compression_ratio']:.2f}",
            percent(p["accuracy"]),
            None if (score := (p.get("metrics") or {}).get("score")) is None else f"{score:.2f}",
            p["status"],
        ]
        for p in sweep["points"]
    ]
    title = (
        f"sweep: {len(sweep['points'])} points ({c['evaluated']} evaluated now, {c['resumed']} resumed, "
        f"{c['failed']} failed)"
    )
    errors = [f"{p['name']} {p['status']}: {p['error']}" for p in sweep["points"] if p["status"] != "ok"]
    table = format_table(rows, ["point", "K", "S", "kept", "CR", "accuracy", "score", "status"], title=title)
    return "\n".join([table, *errors])


# ---------------------------------------------------------------------------------------------------
# Prompt regions


def system_prompt_mask(tokenizer, template: Template, prompt: str, input_ids: Sequence[int]) -> list[bool]:
    """True at the tokens of `template.system` in `input_ids`, the ids `tokenize_prompt` made from `prompt`.

    `prompt` must start with the system message (as `Template.render` writes it); the system tokens follow the
    BOS. They are found by tokenizing the system message alone, or, when a tokenizer merges across its end, by
    character offsets; either way they are checked against `input_ids`.
    """
    input_ids = [int(i) for i in input_ids]
    mask = [False] * len(input_ids)
    system = template.system
    if not system:
        return mask
    if not prompt.startswith(system):
        raise ValueError(
            f"the prompt does not start with the template's system message {system[:40]!r}...: {prompt[:80]!r}"
        )
    start = 0 if tokenizer.bos_token_id is None else 1  # tokenize_prompt puts one BOS in front
    if start and input_ids[:1] != [tokenizer.bos_token_id]:
        raise ValueError(f"input_ids do not start with BOS ({tokenizer.bos_token_id}): not made by tokenize_prompt?")
    alone = tokenizer(system, add_special_tokens=False)["input_ids"]
    if input_ids[start : start + len(alone)] == alone:
        candidate = alone
    else:
        # The text up to the first role name is one chunk in tokenize_prompt: its tokens that start inside the
        # system message are the system tokens.
        head = system + template.sep + template.roles[0] + ":"
        try:
            encoded = tokenizer(head, add_special_tokens=False, return_offsets_mapping=True)
        except (NotImplementedError, ValueError, TypeError) as err:
            raise ValueError(
                f"cannot find the system message's tokens: it tokenizes differently inside the prompt "
                f"and the tokenizer gives no character offsets ({err})"
            ) from None
        candidate = [i for i, (s, _) in zip(encoded["input_ids"], encoded["offset_mapping"]) if s < len(system)]
        if input_ids[start : start + len(candidate)] != candidate:
            raise ValueError(
                "cannot find the system message's tokens: the prompt's first tokens "
                f"{input_ids[start : start + len(candidate)]} differ from its own tokens {candidate}"
            )
    for i in range(start, start + len(candidate)):
        mask[i] = True
    return mask


def prompt_regions(
    tokenizer, template: Template, prompt: str, input_ids: Sequence[int], visual_ids: Sequence[int]
) -> dict[str, list[bool]]:
    """Masks over `input_ids` of the regions the profile reports: "visual", "system" and "bos" (see REGIONS)."""
    input_ids = [int(i) for i in input_ids]
    visual = set(int(v) for v in visual_ids)
    bos = tokenizer.bos_token_id
    return {
        "visual": [i in visual for i in input_ids],
        "system": system_prompt_mask(tokenizer, template, prompt, input_ids),
        "bos": [pos == 0 and bos is not None and i == bos for pos, i in enumerate(input_ids)],
    }


# ---------------------------------------------------------------------------------------------------
# The attention profile


@torch.inference_mode()
def answer_attention(model, batch: Mapping[str, torch.Tensor], regions: Mapping[str, torch.Tensor]) -> dict:
    """Per sample and layer, the head-averaged attention mass the answer position puts on each region.

    `batch` holds `input_ids`, `attention_mask` (any padding side) and the `pixel_values*` the model takes;
    `regions` maps names to (B, L) bool masks (disjoint). Returns {"<name>": (B, N) mass, ..., "rest": (B, N)}
    and {"<name>_tokens": (B,) token counts}. One stock forward with `output_hidden_states`: no eager attention.
    """
    ids, mask = batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
    real = mask.bool()
    regions = {k: v.to(model.device).bool() & real for k, v in regions.items()}
    stacked = torch.stack(list(regions.values())) if regions else torch.zeros(0, *ids.shape, dtype=torch.bool)
    if bool((stacked.sum(0) > 1).any()):
        raise ValueError(f"the regions {list(regions)} overlap: a token may belong to one region only")
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)  # as generate() numbers a padded prompt
    pixels = {k: v.to(model.device, model.dtype) for k, v in batch.items() if k.startswith("pixel_values")}
    # dynamic-resolution families' grids and token types: their positions follow the visual layout (M-RoPE)
    layout = {k: v.to(model.device) for k, v in batch.items() if k.endswith("_grid_thw") or k == "mm_token_type_ids"}
    if layout:
        positions = model.rope_positions(ids, mask, None, layout, decoding=False)  # (3, B, L)
    extra = {"compression": None} if hasattr(model, "compression_spec") else {}  # the stock forward, always
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        output_hidden_states=True,
        use_cache=False,
        logits_to_keep=1,
        **pixels,
        **layout,
        **extra,
    )
    decoder = model.model.language_model
    hidden = out.hidden_states  # hidden[l] is decoder layer l's input
    rope = decoder.rotary_emb(hidden[0], position_ids=positions)
    answer = mask.shape[1] - 1 - mask.flip(1).long().argmax(1)  # the last real token of each row
    rest = real & ~stacked.any(0) if regions else real
    weights = {**regions, "rest": rest}
    masses = {name: [] for name in weights}
    for layer_index, layer in enumerate(decoder.layers):
        probs = query_attention(layer, hidden[layer_index], rope, answer, mask).float().mean(1)  # (B, L)
        for name, region in weights.items():
            masses[name].append((probs * region).sum(-1))
    result = {name: torch.stack(values, 1).cpu() for name, values in masses.items()}
    result.update({f"{name}_tokens": region.sum(1).cpu() for name, region in weights.items()})
    return result


def _pad_mask(masks: Sequence[Sequence[bool]], width: int) -> torch.Tensor:
    """Left-pad boolean masks to `width`, as `collate(..., padding_side="left")` pads the ids."""
    out = torch.zeros(len(masks), width, dtype=torch.bool)
    for row, m in enumerate(masks):
        if len(m):
            out[row, width - len(m) :] = torch.as_tensor(list(m), dtype=torch.bool)
    return out


def attention_profile(model, samples: Sequence[Mapping], batch_size: int = 1, pad_token_id: int = 0) -> dict:
    """Mean attention of the answer position on each prompt region at every decoder layer (JSON-ready).

    Each sample holds `input_ids` (a list), its `pixel_values*` tensors and `regions` ({name: list of bools}, e.g.
    from `prompt_regions`). Masses are averaged over heads, then over samples (each sample weighs the same); per
    token means are a sample's region mass over its token count, averaged over the samples that have the region.
    """
    if not samples:
        raise ValueError("the attention profile needs at least one sample")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    names = list(samples[0]["regions"])
    for number, s in enumerate(samples):
        if list(s["regions"]) != names:
            raise ValueError(f"sample {number} has regions {list(s['regions'])}, sample 0 has {names}")
        bad = [k for k, m in s["regions"].items() if len(m) != len(s["input_ids"])]
        if bad:
            raise ValueError(f"sample {number}: region mask(s) {bad} do not have one entry per input id")
    model.eval()
    parts = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = collate([{k: v for k, v in s.items() if k != "regions"} for s in chunk], pad_token_id, "left")
        width = batch["input_ids"].shape[1]
        regions = {name: _pad_mask([s["regions"][name] for s in chunk], width) for name in names}
        parts.append(answer_attention(model, batch, regions))
    joined = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    all_names = [*names, "rest"]
    num_layers = len(model.model.language_model.layers)
    layers = []
    for layer in range(num_layers):
        row = {"layer": layer}
        for name in all_names:
            mass, count = joined[name][:, layer].double(), joined[f"{name}_tokens"].double()
            row[f"{name}_mass"] = float(mass.mean())
            present = count > 0
            row[f"{name}_per_token"] = float((mass[present] / count[present]).mean()) if bool(present.any()) else None
        layers.append(row)
    return {
        "answer_position": ANSWER_POSITION,
        "regions": {name: REGION_DEFINITIONS.get(name, "") for name in all_names},
        "layer_index": "decoder layer l, 0-based: the attention inside layer l (a spec with K = l pools just "
        "before it)",
        "averaging": "head mean per sample, then the mean over samples; per_token = region mass / its tokens",
        "samples": len(samples),
        "num_layers": num_layers,
        "heads": model.model.language_model.config.num_attention_heads,
        "tokens": {name: float(joined[f"{name}_tokens"].double().mean()) for name in all_names},
        "layers": layers,
        "per_sample": {name: joined[name].tolist() for name in all_names},
    }


def format_attention(attention: Mapping) -> str:
    """The attention profile as a table, one row per decoder layer: mass on each region, and per token."""
    regions = list(attention["tokens"])
    dense = [n for n in ("visual", "system") if n in regions]  # the paper's point: many tokens, little each
    tokens = ", ".join(f"{r} {attention['tokens'][r]:.0f}" for r in regions)
    rows = [
        [
            r["layer"],
            *(f"{r[f'{n}_mass']:.3f}" for n in regions),
            *(None if r[f"{n}_per_token"] is None else f"{r[f'{n}_per_token']:.2e}" for n in dense),
        ]
        for r in attention["layers"]
    ]
    title = (
        f"attention of the answer position (last prompt token), mean over {attention['samples']} samples and "
        f"{attention['heads']} heads; tokens: {tokens}"
    )
    return format_table(rows, ["layer", *regions, *(f"{n}/token" for n in dense)], title=title)
