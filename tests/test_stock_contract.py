"""With no spec (or a no-op spec) our compressed classes behave as transformers' own, checked against the stock class.

The checks follow what transformers' model tests (ModelTesterMixin, GenerationTesterMixin) ask of the stock LLaVA
and Video-LLaVA classes: the output class and its keys, static caches and compiled generation, prepared 4D masks,
the forward signature that `generate` filters by, the initialisation of weights missing from a checkpoint.
"""

import copy
import inspect
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_compressed_forward import llava_inputs, video_inputs
from tiny_models import IMAGE, VIDEO, pixels, tiny_llava, tiny_video_llava
from transformers import (
    CompileConfig,
    LlavaForConditionalGeneration,
    LogitsProcessor,
    VideoLlavaForConditionalGeneration,
)
from transformers.cache_utils import Cache

from image_llavolta.compression import CompressionSpec, enable_compression
from image_llavolta.models.llava import LlavoltaForConditionalGeneration
from video_llavolta.configs import tiny_video_llava_config
from video_llavolta.models.video_llava import VideoLlavoltaForConditionalGeneration

NOOP_SPECS = [None, CompressionSpec(4, 2), CompressionSpec(1, 1)]  # the tiny models have 4 decoder layers


def stock_and_ours(kind, spec=None):
    """The stock tiny model and an identical copy turned into our class with `spec` in its config."""
    stock = tiny_llava() if kind == "llava" else tiny_video_llava()
    return stock, enable_compression(copy.deepcopy(stock), spec)


def batch_of(kind):
    _, batch, _ = llava_inputs("left") if kind == "llava" else video_inputs("left")
    batch.pop("position_ids")  # as generate() and the model tests call it
    return batch


def assert_same(got, expected):
    """Outputs equal element by element: tensors exactly, caches layer by layer, containers recursively."""
    assert type(got) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert torch.equal(got, expected)
    elif isinstance(expected, Cache):
        assert len(got.layers) == len(expected.layers)
        for a, b in zip(got.layers, expected.layers):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    elif isinstance(expected, (tuple, list)):
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert_same(a, b)
    else:
        assert got == expected


@pytest.mark.parametrize("spec", NOOP_SPECS, ids=str)
@pytest.mark.parametrize("kind", ["llava", "video"])
@torch.no_grad()
def test_uncompressed_forward_returns_exactly_the_stock_output(kind, spec):
    stock, ours = stock_and_ours(kind, spec)
    batch = batch_of(kind)
    expected, got = stock(**batch, labels=batch["input_ids"]), ours(**batch, labels=batch["input_ids"])
    assert type(got) is type(expected) and list(got.keys()) == list(expected.keys())
    assert_same(got.to_tuple(), expected.to_tuple())
    assert_same(ours(**batch, return_dict=False), stock(**batch, return_dict=False))


@pytest.mark.parametrize("kind", ["llava", "video"])
@torch.no_grad()
def test_uncompressed_generate_with_a_static_cache_equals_stock(kind):
    # generate() hands the forward a prepared 4D mask for a static cache.
    stock, ours = stock_and_ours(kind)
    batch = batch_of(kind)
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0, cache_implementation="static")
    assert torch.equal(ours.generate(**batch, **kw), stock.generate(**batch, **kw))


@torch.no_grad()
def test_uncompressed_compiled_generate_equals_stock():
    from torch._dynamo.utils import counters

    stock, ours = stock_and_ours("llava", CompressionSpec(4, 2))
    batch = batch_of("llava")
    compile_config = CompileConfig(backend="eager", fullgraph=True, mode=None)  # eager: tracing is what is tested
    compile_config._compile_all_devices = True  # transformers compiles on CPU only when asked to
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0, cache_implementation="static")
    expected = stock.generate(**batch, **kw)
    torch._dynamo.reset()
    counters.clear()
    assert torch.equal(ours.generate(**batch, compile_config=compile_config, **kw), expected)
    assert counters["stats"]["unique_graphs"] >= 1  # the decoding steps ran compiled


@pytest.mark.parametrize("kind", ["llava", "video"])
@torch.no_grad()
def test_uncompressed_forward_takes_a_custom_4d_mask_as_stock(kind):
    stock, ours = stock_and_ours(kind)
    batch = batch_of(kind)
    padding = batch.pop("attention_mask").bool()
    length = padding.shape[1]
    allowed = torch.tril(torch.ones(length, length, dtype=torch.bool)) & padding[:, None, :]  # (B, L, L)
    batch["attention_mask"] = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]  # (B, 1, L, L)
    assert_same(ours(**batch).to_tuple(), stock(**batch).to_tuple())


@torch.no_grad()
def test_forward_compiles_with_fullgraph_with_a_spec_in_the_config():
    stock, ours = stock_and_ours("llava")
    batch = batch_of("llava")
    expected = stock(**batch).logits
    ours(**batch)  # transformers sets up its output capturing on a first call, which dynamo does not trace (stock too)
    ours.config.llavolta_compression = CompressionSpec(4, 2).to_dict()  # a no-op spec, parsed in the compiled call
    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True, backend="eager")
    for _ in range(2):  # the first call parses the spec, the second reads the parsed one
        torch.testing.assert_close(compiled(**batch).logits, expected)


def test_the_spec_is_parsed_once_per_config_value():
    _, ours = stock_and_ours("llava", CompressionSpec(2, 4))
    first = ours.compression_spec
    assert ours.compression_spec is first == CompressionSpec(2, 4)
    ours.config.llavolta_compression = CompressionSpec(1, 2).to_dict()  # a new value is parsed again
    assert ours.compression_spec == CompressionSpec(1, 2)


@pytest.mark.parametrize(
    "ours_cls,stock_cls",
    [
        (LlavoltaForConditionalGeneration, LlavaForConditionalGeneration),
        (VideoLlavoltaForConditionalGeneration, VideoLlavaForConditionalGeneration),
    ],
)
def test_forward_signature_is_the_stock_one_plus_the_compression_arguments(ours_cls, stock_cls):
    ours = inspect.signature(ours_cls.forward).parameters
    stock = inspect.signature(stock_cls.forward).parameters
    assert [ours[name] for name in stock] == list(stock.values())  # kinds, defaults, annotations (Unpack[...])
    assert [name for name in ours if name in stock] == list(stock)  # in stock's order
    assert [name for name in ours if name not in stock] == ["compression", "output_compression"]


@torch.no_grad()
def test_generate_takes_the_deprecated_pixel_values_images_as_stock():
    stock, ours = stock_and_ours("video")
    ids = torch.tensor([[5, 6] + [IMAGE] * 16 + [7, 8]])
    kw = dict(input_ids=ids, pixel_values_images=pixels(1, seed=3), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(**kw), stock.generate(**kw))


def drop_weights(folder, patterns):
    """Remove the weights whose names contain any of `patterns` from a saved checkpoint; return their names."""
    path = os.path.join(folder, "model.safetensors")
    state = load_file(path)
    dropped = sorted(k for k in state if any(p in k for p in patterns))
    save_file({k: v for k, v in state.items() if k not in dropped}, path, metadata={"format": "pt"})
    return dropped


# A vision attention block (CLIP scales its projections), CLIP's embeddings, a decoder layer, the projector, the head.
MISSING = (
    "encoder.layers.0.self_attn.",
    "class_embedding",
    "language_model.model.layers.1.",
    "multi_modal_projector",
    "lm_head",
)


@pytest.mark.parametrize(
    "ours_cls,make",
    [
        (LlavoltaForConditionalGeneration, tiny_llava),
        (VideoLlavoltaForConditionalGeneration, tiny_video_llava),
    ],
)
def test_weights_missing_from_a_checkpoint_initialise_as_stock(tmp_path, ours_cls, make):
    stock = make()
    stock.save_pretrained(tmp_path)
    assert len(drop_weights(tmp_path, MISSING)) > 10
    torch.manual_seed(7)
    expected = type(stock).from_pretrained(tmp_path).state_dict()
    torch.manual_seed(7)
    got = ours_cls.from_pretrained(tmp_path).state_dict()
    assert list(got) == list(expected)
    assert [k for k in expected if not torch.equal(got[k], expected[k])] == []


@pytest.mark.parametrize(
    "ours_cls,stock_cls,make",
    [
        (LlavoltaForConditionalGeneration, LlavaForConditionalGeneration, tiny_llava),
        (VideoLlavoltaForConditionalGeneration, VideoLlavaForConditionalGeneration, tiny_video_llava),
    ],
)
def test_a_model_built_from_a_config_initialises_as_stock(ours_cls, stock_cls, make):
    config = make().config
    torch.manual_seed(3)
    expected = stock_cls._from_config(config).state_dict()
    torch.manual_seed(3)
    got = ours_cls._from_config(config).state_dict()
    assert [k for k in expected if not torch.equal(got[k], expected[k])] == []


def test_missing_temporal_weights_take_clips_and_languagebinds_initialisation(tmp_path):
    # Loading a checkpoint without the temporal branch (the HF port's layout) into the temporal model.
    plain = VideoLlavoltaForConditionalGeneration._from_config(tiny_video_llava_config(vocab_size=96))
    plain.save_pretrained(tmp_path)
    config = tiny_video_llava_config(vocab_size=96, temporal_attention=True)
    config.save_pretrained(tmp_path)
    torch.manual_seed(0)
    model = VideoLlavoltaForConditionalGeneration.from_pretrained(tmp_path)
    vision = config.vision_config
    dim, depth, factor = vision.hidden_size, vision.num_hidden_layers, vision.initializer_factor
    # CLIP's `_init_weights` for attention blocks and LanguageBind's time embedding (std of ~dim² draws each)
    expected = {
        "temporal_attn.q_proj.weight": dim**-0.5 * (2 * depth) ** -0.5 * factor,
        "temporal_attn.out_proj.weight": dim**-0.5 * factor,
        "temporal_embedding": dim**-0.5,
    }
    for layer in model.model.video_tower.encoder.layers:
        params = dict(layer.named_parameters())
        for name, std in expected.items():
            assert params[name].std().item() == pytest.approx(std, rel=0.15), name


class ForceToken(LogitsProcessor):
    """Makes `token` the only choice at generated step `step` (what an untrained model may pick on its own)."""

    def __init__(self, prompt_length: int, step: int, token: int):
        self.at, self.token = prompt_length + step, token

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.at:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.token] = 0.0
        return scores


@pytest.mark.parametrize("kind,placeholder", [("llava", IMAGE), ("video", VIDEO)])
@torch.no_grad()
def test_a_generated_placeholder_id_is_decoded_as_text(kind, placeholder):
    # The placeholder's embedding row copied onto a text id: generating either one must then continue identically.
    _, model = stock_and_ours(kind, CompressionSpec(1, 4))
    text_id = 7
    embeddings = model.get_input_embeddings().weight
    embeddings[text_id] = embeddings[placeholder]
    batch = batch_of(kind)
    prompt = batch["input_ids"].shape[1]
    runs = {}
    for token in (placeholder, text_id):
        runs[token] = model.generate(
            **batch,
            max_new_tokens=4,
            min_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
            logits_processor=[ForceToken(prompt, 1, token)],
            output_logits=True,
            return_dict_in_generate=True,
        )
    with_placeholder, with_text = runs[placeholder], runs[text_id]
    assert bool((with_placeholder.sequences[:, prompt + 1] == placeholder).all())
    for got, expected in zip(with_placeholder.logits, with_text.logits):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
