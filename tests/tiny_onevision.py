"""Tiny LLaVA-OneVision models, mixed batches and an independent compressed reference for the tests (no downloads).

The reference takes each sample's layout from stock transformers run a different way than the adapter reads it:
`pack_image_features` fed marker features (1 on visual tokens, 0 on the newline), and
for videos the frame count of the pixels and 16 tokens per frame, worked out by hand (7×7 patches → ceil(7/2)²).
"""

from __future__ import annotations

import torch
from transformers import LlavaOnevisionForConditionalGeneration, Qwen2Model
from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

from video_llavolta.onevision import tiny_onevision_config

IMAGE, VIDEO, PAD = 94, 95, 0
BASE = 49  # 28 px / 4 px patches: 7 × 7 tokens per base image
FRAME = 16  # the model's 2×2 bilinear pooling of 7 × 7: 4 × 4


def tiny_onevision(attn="sdpa", seed=0, **config) -> LlavaOnevisionForConditionalGeneration:
    """The stock class, random-initialised from the tiny config."""
    torch.manual_seed(seed)
    cfg = tiny_onevision_config(**config)
    return LlavaOnevisionForConditionalGeneration._from_config(cfg, attn_implementation=attn).eval()


def text(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 80, (n,), generator=g).tolist()


@torch.no_grad()
def image_layout(model, size, alone=True) -> list[int]:
    """Per feature of one image: -1 for a newline, else a segment key (0 = base image, then one per mosaic row)."""
    cfg = model.config
    n = image_size_to_num_patches(size, cfg.image_grid_pinpoints, cfg.vision_config.image_size) if alone else 1
    packed, _ = model.model.pack_image_features(
        [torch.ones(n, BASE, 1)],
        torch.tensor([size]),
        image_newline=torch.zeros(1),
        vision_aspect_ratio=cfg.vision_aspect_ratio,
    )
    keys, row = [], 0
    for i, (visual,) in enumerate(packed[0].tolist()):
        if visual < 0.5:
            keys.append(-1)
            row += 1
        else:
            keys.append(0 if i < BASE else 1 + row)
    return keys


def video_layout(frames) -> list[int]:
    return [f for f in range(frames) for _ in range(FRAME)] + [-1]


class Sample:
    """One sample built from parts: int n = n text tokens, ('image', (h, w)), ('video', frames)."""

    def __init__(self, model, *parts, seed=0):
        self.ids, self.keys, self.images, self.videos = [], [], [], []
        n_images = sum(1 for p in parts if isinstance(p, tuple) and p[0] == "image")
        for j, part in enumerate(parts):
            if isinstance(part, int):
                self.ids += text(part, seed + j)
                self.keys += [None] * part
                continue
            kind, arg = part
            layout = image_layout(model, arg, n_images == 1) if kind == "image" else video_layout(arg)
            (self.images if kind == "image" else self.videos).append(arg)
            self.ids += [IMAGE if kind == "image" else VIDEO] * len(layout)
            tag = len(self.images) + 100 * len(self.videos)  # distinct per item
            self.keys += [k if k == -1 else (tag, k) for k in layout]


def make_pixels(model, samples, seed=0):
    """pixel_values (images, max tiles, 3, 28, 28), image_sizes, batch_num_images, pixel_values_videos."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    counts = [
        image_size_to_num_patches(s, cfg.image_grid_pinpoints, 28) if len(x.images) == 1 else 1
        for x in samples
        for s in x.images
    ]
    out = {}
    if counts:
        out["pixel_values"] = torch.randn(len(counts), max(counts), 3, 28, 28, generator=g)
        out["image_sizes"] = torch.tensor([s for x in samples for s in x.images])
        out["batch_num_images"] = torch.tensor([len(x.images) for x in samples])
    frames = {f for x in samples for f in x.videos}
    if frames:
        assert len(frames) == 1, "one frame count per batch (pixel_values_videos is one tensor)"
        out["pixel_values_videos"] = torch.randn(
            sum(len(x.videos) for x in samples), frames.pop(), 3, 28, 28, generator=g
        )
    return out


def split_pixels(samples, pixels):
    """Each sample's own visual inputs, cut from the batch's."""
    out, ki, kv = [], 0, 0
    for x in samples:
        d = {}
        if x.images:
            n = len(x.images)
            d["pixel_values"] = pixels["pixel_values"][ki : ki + n]
            d["image_sizes"] = pixels["image_sizes"][ki : ki + n]
            d["batch_num_images"] = torch.tensor([n])
            ki += n
        if x.videos:
            d["pixel_values_videos"] = pixels["pixel_values_videos"][kv : kv + len(x.videos)]
            kv += len(x.videos)
        out.append(d)
    return out


def pad_batch(seqs, side):
    """input_ids, attention_mask and generate-style position ids for a padded batch."""
    n = max(map(len, seqs))
    ids = torch.full((len(seqs), n), PAD)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(n - len(s), n) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s)
        mask[i, sl] = 1
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)


def windows(segment, stride, **_):
    """Average pooling's groups: S consecutive tokens of the segment (the last window may be shorter)."""
    return [segment[w : w + stride] for w in range(0, len(segment), stride)]


@torch.no_grad()
def reference_logits(model, sample, layer, stride, groups=windows, attentions=False, **pixels) -> torch.Tensor:
    """Compressed logits of one unpadded sample: stock forward to layer K, loop pooling, stock Qwen2 layers after.

    Text tokens and newlines keep their own positions; each segment's groups (`groups(segment, stride, hidden=,
    out=, ordinal=)`, default average pooling's windows) are averaged, at the floor of their mean position.
    """
    out = LlavaOnevisionForConditionalGeneration.forward(
        model,
        input_ids=torch.tensor([sample.ids]),
        output_hidden_states=True,
        output_attentions=attentions,
        use_cache=False,
        **pixels,
    )
    hidden = out.hidden_states[layer][0]
    keys, slots, i, ordinal = sample.keys, [], 0, 0
    while i < len(keys):
        if keys[i] is None or keys[i] == -1:
            slots.append([i])
            i += 1
            continue
        end = i
        while end < len(keys) and keys[end] == keys[i]:
            end += 1
        slots += groups(list(range(i, end)), stride, hidden=hidden, out=out, ordinal=ordinal)
        ordinal, i = ordinal + 1, end
    pooled = torch.stack([sum(hidden[j] for j in g) / len(g) for g in slots])
    positions = [sum(g) // len(g) for g in slots]
    text_model = model.model.language_model
    n = text_model.config.num_hidden_layers
    fields = {**text_model.config.to_dict(), "num_hidden_layers": n - layer, "layer_types": None}
    cfg = text_model.config.__class__(**fields)
    cfg._attn_implementation = "eager"
    tail = Qwen2Model(cfg).eval()
    for j in range(n - layer):
        tail.layers[j].load_state_dict(text_model.layers[layer + j].state_dict())
    tail.norm.load_state_dict(text_model.norm.state_dict())
    h = tail(inputs_embeds=pooled[None], position_ids=torch.tensor([positions])).last_hidden_state
    return model.lm_head(h)[0]


def mixed_batch(model, side):
    """Samples that stress the layout: anyres images of different grids, multi-image, videos, text only."""
    samples = [
        Sample(model, 5, ("image", (20, 50)), 4, seed=1),
        Sample(model, 3, ("video", 3), 2, ("video", 3), 3, seed=2),
        Sample(model, 9, seed=3),
        Sample(model, 2, ("image", (28, 28)), 1, ("image", (50, 20)), 3, seed=4),
        Sample(model, 4, ("image", (40, 40)), 2, ("video", 3), 2, seed=5),
    ]
    pixels = make_pixels(model, samples, seed=7)
    ids, mask, positions = pad_batch([s.ids for s in samples], side)
    batch = dict(input_ids=ids, attention_mask=mask, position_ids=positions, **pixels)
    return samples, batch, split_pixels(samples, pixels)


# The chat template of llava-hf/llava-onevision-qwen2-7b-ov-hf (Qwen2's <|im_start|> turns; images, then videos,
# then text, each text part after a newline).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def qwen_style_tokenizer(vocab_size=96):
    """A word-level tokenizer with Qwen2's specials and the OneVision chat template; <image>, <video> last."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = "user assistant what is in the video a red circle moving left right how many objects ? .".split()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + words)}
    vocab.update({f"w{i}": len(vocab) + i for i in range(vocab_size - 2 - len(vocab))})
    vocab.update({"<image>": vocab_size - 2, "<video>": vocab_size - 1})
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<image>", "<video>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
