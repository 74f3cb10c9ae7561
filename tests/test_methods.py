"""Compressor variants (random, kmeans, fastv) against references written with plain loops, per segment."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_compressed_forward import llava_inputs, valid_rows, video_inputs
from tiny_models import FRAMES, IMAGE, PATCHES, VIDEO, pixels, reference_logits, sequence, tiny_llava, tiny_video_llava

from image_llavolta.compression import FROM_CONFIG, CompressionSpec, enable_compression, parse_spec, spec_label
from image_llavolta.compression.methods import KMEANS_ITERATIONS, _fill_empty
from image_llavolta.schedule import Stage

METHODS = ("avgpool", "random", "kmeans", "fastv")


# ---- references: the groups of token indices each slot of one segment averages, in slot order ----


def random_groups(seed):
    def groups(segment, stride, ordinal, **_):
        n = len(segment)
        g = torch.Generator().manual_seed(hash((seed, ordinal, n)) & (2**63 - 1))
        noise = torch.rand(n, generator=g).tolist()
        best = sorted(range(n), key=lambda o: (-noise[o], o))[: math.ceil(n / stride)]
        return [[segment[o]] for o in sorted(best)]

    return groups


def fastv_groups(layer, query):
    def groups(segment, stride, out, **_):
        attention = out.attentions[layer - 1][0, :, query].mean(0)  # eager map of layer K, head-averaged
        score = {i: float(attention[i]) for i in segment}
        best = sorted(segment, key=lambda i: (-score[i], i))[: math.ceil(len(segment) / stride)]
        return [[i] for i in sorted(best)]

    return groups


def kmeans_groups(segment, stride, hidden, **_):
    """Lloyd's k-means in loops: windows as the start, ties to the lower cluster, empties refilled."""
    x = [hidden[i].float() for i in segment]
    n, k = len(x), math.ceil(len(x) / stride)

    def means(assign, old):
        out = []
        for j in range(k):
            members = [x[i] for i in range(n) if assign[i] == j]
            out.append(sum(members) / len(members) if members else old[j])
        return out

    assign = [i // stride for i in range(n)]
    centroids = means(assign, None)
    for _ in range(KMEANS_ITERATIONS):
        new = [min(range(k), key=lambda j: (float((x[i] - centroids[j]).norm()), j)) for i in range(n)]
        if new == assign:
            break
        assign = new
        centroids = means(assign, centroids)
    while len(set(assign)) < k:
        empty = min(set(range(k)) - set(assign))
        sizes = {j: assign.count(j) for j in range(k)}
        far = max(
            (i for i in range(n) if sizes[assign[i]] >= 2),
            key=lambda i: (float((x[i] - centroids[assign[i]]).norm()), -i),
        )
        assign[far] = empty
    return [[segment[i] for i in range(n) if assign[i] == j] for j in range(k)]


def groups_for(method, layer=None, query=None, seed=0):
    return {
        "avgpool": None,
        "random": random_groups(seed),
        "kmeans": kmeans_groups,
        "fastv": fastv_groups(layer, query),
    }[method]


# ---- the tests ----


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method", ["random", "kmeans", "fastv"])
@pytest.mark.parametrize("kind", ["llava", "video"])
@torch.no_grad()
def test_batched_forward_matches_loop_reference(kind, method, side):
    layer, stride = 2, 3
    model = tiny_llava("eager") if kind == "llava" else tiny_video_llava("eager")
    seqs, batch, per_sample = llava_inputs(side) if kind == "llava" else video_inputs(side)
    refs = [
        reference_logits(
            model, s, layer, stride, groups=groups_for(method, layer, len(s) - 1), attentions=method == "fastv", **p
        )
        for s, p in zip(seqs, per_sample)
    ]
    enable_compression(model, CompressionSpec(layer, stride, method))
    out = model(**batch)
    for b, ref in enumerate(refs):
        torch.testing.assert_close(valid_rows(out.logits[b], ref.shape[0], side), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("stride", [2, 4, 17, 40])
@torch.no_grad()
def test_every_method_keeps_the_avgpool_token_count_per_frame(stride):
    model = enable_compression(tiny_video_llava(), None)
    _, batch, _ = video_inputs("left")
    n_frames = 2 * FRAMES  # two videos in VIDEO_BATCH
    n_images = 2
    expected = n_frames * math.ceil((PATCHES + 1) / stride) + n_images * math.ceil(PATCHES / stride)
    for method in METHODS:
        stats = model(**batch, compression=CompressionSpec(1, stride, method)).compression
        assert stats.tokens_in == n_frames * (PATCHES + 1) + n_images * PATCHES
        assert stats.tokens_out == expected, method


@pytest.mark.parametrize("method", METHODS)
@torch.no_grad()
def test_methods_are_deterministic_and_batch_independent(method):
    """Same input → same output; a sample's result does not depend on what it is batched with."""
    model = enable_compression(tiny_video_llava(), None)
    spec = CompressionSpec(1, 4, method)
    seqs, batch, per_sample = video_inputs("left")
    a, b = model(**batch, compression=spec), model(**batch, compression=spec)
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    alone = model(input_ids=torch.tensor([seqs[0]]), compression=spec, **per_sample[0])
    torch.testing.assert_close(
        valid_rows(a.logits[0], alone.logits.shape[1], "left"), alone.logits[0], atol=2e-5, rtol=1e-4
    )


@torch.no_grad()
def test_random_seed_changes_the_selection_and_frames_differ():
    model = enable_compression(tiny_video_llava(), None)
    ids = torch.tensor([sequence(3, "video", 4, seed=1)])
    video = pixels(1, FRAMES, seed=2)
    out = {
        seed: model(input_ids=ids, pixel_values_videos=video, compression=CompressionSpec(1, 4, "random", seed))
        for seed in (0, 1)
    }
    assert not torch.allclose(out[0].logits, out[1].logits)
    first = random_groups(0)(list(range(PATCHES + 1)), 4, ordinal=0)
    second = random_groups(0)(list(range(PATCHES + 1)), 4, ordinal=1)
    assert first != second  # each frame drops its own tokens


def test_fill_empty_hands_out_the_farthest_points():
    # Three equal starting centroids: Lloyd puts every point in cluster 0 and stops.
    x = torch.tensor([[0.0], [10.0], [4.0], [6.0], [0.1], [9.9]])[None]
    assign = torch.zeros(1, 6, dtype=torch.long)
    centroids = torch.full((1, 3, 1), 5.0)
    # |x - 5| = 5, 5, 1, 1, 4.9, 4.9: point 0 (first of the farthest) → cluster 1, then point 1 → cluster 2.
    assert _fill_empty(x, assign, centroids, 3).tolist() == [[1, 2, 0, 0, 0, 0]]


def test_fastv_in_training_ranks_by_the_last_prompt_token_not_the_answer():
    model = tiny_llava("eager")
    ids = sequence(3, "image", 6, 4, seed=3)  # the last 4 tokens are the answer
    answer_start = len(ids) - 4
    labels = torch.tensor([[-100] * answer_start + ids[answer_start:]])
    pv = pixels(1, seed=4)
    enable_compression(model, CompressionSpec(1, 4, "fastv"))
    loss = model(input_ids=torch.tensor([ids]), pixel_values=pv, labels=labels).loss
    ref = reference_logits(model, ids, 1, 4, groups=fastv_groups(1, answer_start - 1), attentions=True, pixel_values=pv)
    # Compressed rows: 3 text, ceil(16/4) = 4 pooled, then the 10 text tokens; row r predicts the next text token.
    text_after = ids[3 + PATCHES :]
    rows = range(3 + 4 - 1, 3 + 4 - 1 + len(text_after))
    targets = torch.tensor([t if i >= answer_start - (3 + PATCHES) else -100 for i, t in enumerate(text_after)])
    want = F.cross_entropy(ref[list(rows)], targets, ignore_index=-100)
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-5)
    last_token = reference_logits(
        model, ids, 1, 4, groups=fastv_groups(1, len(ids) - 1), attentions=True, pixel_values=pv
    )
    assert not torch.allclose(last_token, ref)  # the answer's attention would have chosen other tokens


@pytest.mark.parametrize("method", ["random", "kmeans", "fastv"])
def test_methods_train(method):
    """Backward reaches the vision tower through the kept or clustered tokens; loss is finite."""
    model = enable_compression(tiny_video_llava(), None).train()
    _, batch, _ = video_inputs("right")
    labels = torch.where((batch["input_ids"] == IMAGE) | (batch["input_ids"] == VIDEO), -100, batch["input_ids"])
    labels[batch["attention_mask"] == 0] = -100
    out = model(**batch, labels=labels, compression=CompressionSpec(1, 4, method))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grad = model.model.video_tower.embeddings.patch_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["random", "kmeans", "fastv"])
@torch.no_grad()
def test_generate_matches_recompute(method):
    """Cached decoding equals recomputing the whole sequence; labels from the prompt's end on pin FastV's query
    to the last prompt token, as the prefill had it (random and kmeans ignore labels)."""
    model = enable_compression(tiny_video_llava(), CompressionSpec(2, 4, method))
    _, batch, _ = video_inputs("left")
    batch.pop("position_ids")
    out = model.generate(
        **batch,
        max_new_tokens=4,
        min_new_tokens=4,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    pixels_in = {k: v for k, v in batch.items() if k.startswith("pixel")}
    rows, prompt = batch["input_ids"].shape
    for t, step in enumerate(out.logits):
        ids = out.sequences[:, : prompt + t + 1]  # up to the token chosen at step t, supervised from the prompt on
        mask = torch.cat([batch["attention_mask"], torch.ones(rows, t + 1, dtype=torch.long)], dim=1)
        labels = torch.where(torch.arange(ids.shape[1]) >= prompt, ids, -100)
        full = model(
            input_ids=ids,
            attention_mask=mask,
            labels=labels,
            position_ids=(mask.cumsum(1) - 1).clamp(min=0),
            use_cache=False,
            **pixels_in,
        )
        torch.testing.assert_close(step, full.logits[:, -2], atol=1e-4, rtol=1e-4)


def test_spec_parsing_labels_and_validation():
    assert parse_spec("2,8") == CompressionSpec(2, 8)
    assert parse_spec(" 2, 8, fastv") == CompressionSpec(2, 8, "fastv")
    assert parse_spec("None") is None and parse_spec("from_config") is FROM_CONFIG
    assert [spec_label(s) for s in (None, FROM_CONFIG, CompressionSpec(2, 8))] == ["none", "from_config", "K=2,S=8"]
    assert CompressionSpec(2, 8, "kmeans").label() == "K=2,S=8,kmeans"
    assert Stage.from_dict(
        {"layer": 1, "stride": 4, "method": "random", "seed": 3, "fraction": 1.0}
    ).spec == CompressionSpec(1, 4, "random", 3)
    for bad in ("2", "2,8,median", "a,b", "2,8,fastv,1"):
        with pytest.raises(ValueError, match="K,S"):
            parse_spec(bad)
    with pytest.raises(ValueError, match="layer must be >= 1"):
        CompressionSpec(0, 4, "fastv")
