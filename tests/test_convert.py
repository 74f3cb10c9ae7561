"""The converter on tiny checkpoints written in the released storage: the Video-LLaVA LLM folder (half-precision
shards plus index, embedded tower copies, rotary buffers), fp32 LanguageBind tower folders, a LoRA variant.

The converted model's logits are checked against a forward assembled here from the same original tensors, after
upstream's formulation: stock CLIP towers (LanguageBind's temporal branch written out from its modeling_video.py),
the mm_projector by hand, a stock Llama decoder on the spliced embeddings.
"""

import json
import string

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, LlamaTokenizer
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from image_llavolta.conversation import LLAVA_V1, checkpoint_template
from image_llavolta.processing import preprocessing_mode
from video_llavolta.checkpoint import load_pretrained
from video_llavolta.configs import short_clip_policy
from video_llavolta.convert import convert, main

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 32000  # Vicuna's: the placeholders land at 32000 and 32001, as in the -hf port
FRAMES, PATCHES = 8, 16
# LanguageBind folders carry a full CLIP vision config; 64-dim heads, GELU and 1e-5 as LanguageBind's ViT-L/14
VISION = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=1,
    image_size=28,
    patch_size=7,
    projection_dim=64,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)
TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    max_position_embeddings=512,
    bos_token_id=1,
    eos_token_id=2,
)
ROPE = dict(rope_theta=50000.0, rope_scaling={"type": "linear", "factor": 2.0})  # legacy fields, carried over
TEMPORAL = ("temporal_attn.q_proj", "temporal_attn.k_proj", "temporal_attn.v_proj", "temporal_attn.out_proj")


def llama_style_tokenizer(size: int = VOCAB) -> LlamaTokenizer:
    """Llama's layout: <unk> 0, <s> 1, </s> 2, byte fallback tokens, '▁'-prefixed pieces, BOS added, no pad."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in ["▁", *string.ascii_letters, *string.digits, *string.punctuation, "▁a", "▁t"]:
        vocab.setdefault(piece, len(vocab))
    vocab.update({f"▁f{i}": len(vocab) + i for i in range(size - len(vocab))})
    return LlamaTokenizer(
        vocab=vocab,
        merges=[("▁", "a"), ("▁", "t")],
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        add_bos_token=True,
    )


def random_release(seed: int = 0) -> dict:
    """The original tensors: LLM (Llama keys, mm_projector) and the two towers in LanguageBind's layout, fp32."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    torch.manual_seed(seed)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, **TEXT)).state_dict()
    llm = {k: v + rand(*v.shape, scale=0.02) if "norm" in k else v for k, v in llm.items()}
    d, h = VISION["hidden_size"], TEXT["hidden_size"]
    llm.update(
        {
            "model.mm_projector.0.weight": rand(h, d),
            "model.mm_projector.0.bias": rand(h),
            "model.mm_projector.2.weight": rand(h, h),
            "model.mm_projector.2.bias": rand(h),
        }
    )
    towers = {}
    for name in ("image", "video"):
        torch.manual_seed(seed + len(name))
        vision = {
            "vision_model." + k: v
            for k, v in CLIPVisionModel(CLIPVisionConfig(**VISION)).state_dict().items()
            if "position_ids" not in k
        }
        vision = {k: v + rand(*v.shape, scale=0.02) if v.is_floating_point() else v for k, v in vision.items()}
        if name == "video":  # LanguageBind's CLIPEncoderLayer with add_time_attn (its modeling_video.py names)
            for i in range(VISION["num_hidden_layers"]):
                p = f"vision_model.encoder.layers.{i}."
                vision[p + "temporal_embedding"] = rand(1, FRAMES, d, scale=d**-0.5)
                vision[p + "temporal_layer_norm1.weight"] = 1 + rand(d)
                vision[p + "temporal_layer_norm1.bias"] = rand(d)
                for proj in TEMPORAL:
                    vision[p + proj + ".weight"], vision[p + proj + ".bias"] = rand(d, d, scale=0.2), rand(d)
        towers[name] = vision
    return {"llm": llm, "image": towers["image"], "video": towers["video"]}


def tower_copies(release: dict, dtype: torch.dtype) -> dict:
    """The towers as the LLM folder holds them: frozen during bf16 training (bf16-rounded), stored as `dtype`."""
    return {
        n: {k: v.to(torch.bfloat16).to(dtype) if v.is_floating_point() else v for k, v in release[n].items()}
        for n in ("image", "video")
    }


def write_release(
    root, release: dict, shards: str = "bin", embedded: bool = True, towers: bool = True, llm_dtypes: dict | None = None
):
    """The three released folders; the LLM folder as two shards plus index (fp16 unless `llm_dtypes` maps a key
    prefix to another dtype), its tower copies in fp16. Records the LLM tensors as stored in release["stored_llm"]."""
    llm_dtypes = llm_dtypes or {}
    half = tower_copies(release, torch.float16)
    llm = {
        k: v.to(next((d for p, d in llm_dtypes.items() if k.startswith(p)), torch.float16))
        for k, v in release["llm"].items()
    }
    release["stored_llm"] = dict(llm)  # what the folder holds, for the reference forward
    llm["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(TEXT["hidden_size"] // 4)  # old Llama buffer
    if embedded:
        for name in ("image", "video"):
            llm.update(
                {f"model.{name}_tower.{name}_tower." + k[len("vision_model.") :]: v for k, v in half[name].items()}
            )
            llm[f"model.{name}_tower.{name}_tower.embeddings.position_ids"] = torch.arange(PATCHES + 1)[None]
    d = root / "Video-LLaVA-7B"
    d.mkdir(parents=True)
    keys = sorted(llm)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :]), 1):
        name = f"pytorch_model-0000{i}-of-00002.bin" if shards == "bin" else f"model-0000{i}-of-00002.safetensors"
        tensors = {k: llm[k].clone().contiguous() for k in part}
        if shards == "bin":
            torch.save(tensors, d / name)
        else:
            save_file(tensors, d / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    index = "pytorch_model.bin.index.json" if shards == "bin" else "model.safetensors.index.json"
    (d / index).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (d / "config.json").write_text(
        json.dumps(
            {
                **TEXT,
                **ROPE,
                "vocab_size": VOCAB,
                "model_type": "llava",
                "architectures": ["LlavaLlamaForCausalLM"],
                "torch_dtype": "float16",
                "hidden_act": "silu",
                "pad_token_id": 0,
                "mm_projector_type": "mlp2x_gelu",
                "mm_vision_select_layer": -2,
                "mm_vision_select_feature": "patch",
                "mm_hidden_size": VISION["hidden_size"],
                "mm_use_im_start_end": False,
                "mm_use_im_patch_token": False,
                "image_aspect_ratio": "pad",
                "mm_image_tower": "LanguageBind/LanguageBind_Image",
                "mm_video_tower": "LanguageBind/LanguageBind_Video_merge",
                "tune_mm_mlp_adapter": False,
                "use_cache": True,
            }
        )
    )
    llama_style_tokenizer().save_pretrained(d)
    if not towers:
        return d, None, None
    folders = []
    for name, temporal in (("image", False), ("video", True)):
        f = root / f"LanguageBind_{name.title()}"
        f.mkdir()
        write_tower(f, release[name], {**VISION, "add_time_attn": temporal, "num_frames": FRAMES, "lora_r": 0})
        folders.append(f)
    return d, *folders


def write_tower(folder, vision_weights: dict, vision_config: dict) -> None:
    """A LanguageBind folder: pytorch_model.bin (fp32, with the text side and buffers) and config.json."""
    tensors = {k: v.clone() for k, v in vision_weights.items()}
    tensors.update(
        {
            "vision_model.embeddings.position_ids": torch.arange(PATCHES + 1)[None],
            "text_model.embeddings.token_embedding.weight": torch.zeros(5, 8),
            "logit_scale": torch.ones(()),
            "visual_projection.weight": torch.zeros(8, VISION["hidden_size"]),
            "text_projection.weight": torch.zeros(8, 8),
        }
    )
    torch.save(tensors, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(
        json.dumps(
            {"model_type": "LanguageBindVideo", "projection_dim": 8, "vision_config": vision_config, "text_config": {}}
        )
    )


# --- the independent forward --------------------------------------------------------------------------------


def stock_tower(weights: dict) -> CLIPVisionModel:
    tower = CLIPVisionModel(CLIPVisionConfig(**VISION)).eval()
    plain = {k[len("vision_model.") :]: v.float() for k, v in weights.items() if "temporal_" not in k}
    tower.load_state_dict({k: v for k, v in plain.items() if "position_ids" not in k})
    return tower


def languagebind_video_states(weights: dict, frames: torch.Tensor) -> list[torch.Tensor]:
    """hidden_states of LanguageBind's video tower on one video's frames (T, 3, S, S), after its modeling_video.py:
    time embedding, pre-norm temporal attention with a residual, then the spatial CLIP block, in every layer."""
    vm = stock_tower(weights)
    w = {k: v.float() for k, v in weights.items()}
    d = VISION["hidden_size"]
    x = vm.pre_layrnorm(vm.embeddings(frames))
    states = [x]
    for i, layer in enumerate(vm.encoder.layers):
        p = f"vision_model.encoder.layers.{i}."
        n = x.shape[1]
        x = rearrange(x, "(b t) n d -> (b n) t d", t=FRAMES) + w[p + "temporal_embedding"][:, :FRAMES]
        h = F.layer_norm(
            x, (d,), w[p + "temporal_layer_norm1.weight"], w[p + "temporal_layer_norm1.bias"], VISION["layer_norm_eps"]
        )
        q, k, v = (
            F.linear(h, w[p + f"temporal_attn.{c}_proj.weight"], w[p + f"temporal_attn.{c}_proj.bias"]) for c in "qkv"
        )
        heads = VISION["num_attention_heads"]
        q, k, v = (rearrange(t, "r t (h e) -> r h t e", h=heads) for t in (q, k, v))
        attn = torch.softmax(q @ k.transpose(-1, -2) * (d // heads) ** -0.5, dim=-1) @ v
        out = F.linear(
            rearrange(attn, "r h t e -> r t (h e)"),
            w[p + "temporal_attn.out_proj.weight"],
            w[p + "temporal_attn.out_proj.bias"],
        )
        x = rearrange(x + out, "(b n) t d -> (b t) n d", n=n)
        x = CLIPEncoderLayer.forward(layer, x, None)
        states.append(x)
    return states


@torch.no_grad()
def reference_logits(release: dict, ids: list[int], image: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Video-LLaVA's forward: image features = layer -2 without CLS; video features = layer -2 of every frame, CLS
    kept; both through mlp2x_gelu; spliced into the token embeddings of a stock Llama decoder."""
    llm = {k: v.float() for k, v in release["llm"].items()}
    image_feats = stock_tower(release["image"])(image[None], output_hidden_states=True).hidden_states[-2][0, 1:]
    video_feats = languagebind_video_states(release["video"], video)[-2].flatten(0, 1)

    def project(x):
        x = F.gelu(F.linear(x, llm["model.mm_projector.0.weight"], llm["model.mm_projector.0.bias"]))
        return F.linear(x, llm["model.mm_projector.2.weight"], llm["model.mm_projector.2.bias"])

    config = LlamaConfig(
        vocab_size=VOCAB, **TEXT, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0}
    )
    decoder = LlamaForCausalLM(config).eval()
    decoder.load_state_dict({k: v for k, v in llm.items() if "mm_projector" not in k})
    ids = torch.tensor(ids)
    embeds = decoder.model.embed_tokens(ids.clamp(max=VOCAB - 1))
    embeds[ids == VOCAB] = project(image_feats)
    embeds[ids == VOCAB + 1] = project(video_feats)
    return decoder(inputs_embeds=embeds[None]).logits[0]


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = (
        [1]
        + torch.randint(3, 300, (5,), generator=g).tolist()
        + [VOCAB] * PATCHES
        + torch.randint(3, 300, (3,), generator=g).tolist()
        + [VOCAB + 1] * (FRAMES * (PATCHES + 1))
        + torch.randint(3, 300, (4,), generator=g).tolist()
    )
    return ids, torch.randn(3, 28, 28, generator=g), torch.randn(FRAMES, 3, 28, 28, generator=g)


@torch.no_grad()
def converted_logits(out_dir, ids, image, video) -> torch.Tensor:
    model = load_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    return model(input_ids=torch.tensor([ids]), pixel_values=image[None], pixel_values_videos=video[None]).logits[
        0, :, :VOCAB
    ]


# --- conversions ------------------------------------------------------------------------------------------------


def test_the_released_layout_converts_with_upstreams_numerics(tmp_path):
    release = random_release()
    llm, image, video = write_release(tmp_path, release)
    out = tmp_path / "converted"
    report = convert(str(llm), str(out), str(image), str(video))

    # the towers are the folders' fp32 weights; the embedded fp16 copies were compared, not used
    for tower in ("image_tower", "video_tower"):
        info = report.towers[tower]
        assert info["weights_from"] == str(image if tower == "image_tower" else video)
        copy = info["embedded_copy"]
        assert copy["agree"] and not copy["used"] and copy["tolerance"]["dtype"] == "bfloat16"
        assert copy["embedded_dtypes"] == ["float16"] and copy["folder_dtypes"] == ["float32"]
        diffs = [g["max_abs_diff"] for g in copy["groups"].values()]
        assert 0 < max(diffs) < 0.01  # bf16 rounding of the frozen towers, reported per group
    assert (
        "vision_model.encoder.layers.*.temporal_attn.q_proj.weight"
        in report.towers["video_tower"]["embedded_copy"]["groups"]
    )
    reasons = {r: sorted(k) for r, k in report.dropped.items()}
    assert reasons["RoPE frequencies: a buffer transformers recomputes"] == [
        "llm:model.layers.0.self_attn.rotary_emb.inv_freq"
    ]
    assert len(reasons["position-id buffer that transformers recomputes"]) == 2  # one per tower folder
    saved = json.loads((out / "conversion_report.json").read_text())
    assert saved["towers"]["image_tower"]["embedded_copy"]["agree"] is True

    model = load_pretrained(out, dtype=torch.float32)
    q = "vision_model.encoder.layers.1.temporal_attn.q_proj.weight"
    assert torch.equal(model.model.video_tower.encoder.layers[1].temporal_attn.q_proj.weight, release["video"][q])
    assert torch.equal(
        model.model.image_tower.embeddings.class_embedding, release["image"]["vision_model.embeddings.class_embedding"]
    )

    # config carried over exactly, and the release's inference recipe recorded
    c = model.config
    assert c.text_config.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0}
    assert c.video_temporal_attention is True and c.num_frames == FRAMES
    assert c.vision_config.hidden_act == "gelu" and c.vision_config.num_attention_heads == 1
    assert (c.image_token_id, c.video_token_id, c.text_config.vocab_size) == (VOCAB, VOCAB + 1, 32064)
    assert checkpoint_template(c) is LLAVA_V1
    assert (preprocessing_mode(c), short_clip_policy(c)) == ("languagebind", "linspace")
    assert "tune_mm_mlp_adapter" in report.config["llm_fields_not_carried"]

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.convert_tokens_to_ids(["<image>", "<video>"]) == [VOCAB, VOCAB + 1]
    assert tokenizer("<s> a <video>", add_special_tokens=False)["input_ids"][-1] == VOCAB + 1  # one token
    assert len(tokenizer) == VOCAB + 2 and tokenizer.bos_token_id == 1

    ids, pixels, frames = batch()
    stored = {**release, "llm": release["stored_llm"]}  # the fp16 LLM, the fp32 towers
    torch.testing.assert_close(
        converted_logits(out, ids, pixels, frames), reference_logits(stored, ids, pixels, frames), atol=1e-5, rtol=1e-5
    )


def test_without_tower_folders_the_embedded_copies_are_used(tmp_path, capsys):
    """Safetensors shards with mixed dtypes (the projector bf16), no tower folders, and --dtype for the output."""
    release = random_release(seed=1)
    llm, _, _ = write_release(
        tmp_path,
        release,
        shards="safetensors",
        towers=False,
        llm_dtypes={"model.mm_projector.": torch.bfloat16, "lm_head.": torch.float32},
    )
    out = tmp_path / "converted"
    main(["--llm", str(llm), "--out", str(out), "--dtype", "bfloat16"])
    assert "embedded copy" in capsys.readouterr().out
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["sources"]["llm"]["dtypes"] == ["bfloat16", "float16", "float32"]
    for tower in ("image_tower", "video_tower"):
        info = report["towers"][tower]
        assert info["weights_from"].endswith("(embedded copy: no tower folder given)")
        assert info["assumed"] == {"num_attention_heads": 1, "hidden_act": "gelu", "layer_norm_eps": 1e-5}
    assert report["config"]["output_dtypes"] == ["bfloat16"]
    for shard in out.glob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}

    model = load_pretrained(out, dtype=torch.float32)
    assert model.config.video_temporal_attention and model.config.num_frames == FRAMES  # read off the weights
    assert model.config.vision_config.patch_size == 7 and model.config.vision_config.image_size == 28
    bf16 = {
        "llm": {k: v.to(torch.bfloat16) for k, v in release["stored_llm"].items()},  # the LLM folder's
        **tower_copies(release, torch.bfloat16),
    }  # tensors cast to bf16
    q = "vision_model.encoder.layers.0.temporal_attn.q_proj.weight"
    assert torch.equal(model.model.video_tower.encoder.layers[0].temporal_attn.q_proj.weight, bf16["video"][q].float())
    ids, pixels, frames = batch(seed=1)
    torch.testing.assert_close(
        converted_logits(out, ids, pixels, frames), reference_logits(bf16, ids, pixels, frames), atol=1e-5, rtol=1e-5
    )


def peft_lora_tower(vision: dict, base_layer: bool) -> tuple[dict, dict]:
    """LanguageBind_Video's storage with unmerged LoRA (its convert_to_lora: peft on vision_model.encoder, targets
    temporal_attn.{k,v,q,out}_proj, r=2, alpha=16), and peft's own merge of it."""
    from peft import LoraConfig, get_peft_model

    d = VISION["hidden_size"]
    encoder = nn.Module()
    encoder.layers = nn.ModuleList()
    for i in range(VISION["num_hidden_layers"]):
        layer = nn.Module()
        layer.temporal_attn = nn.Module()
        for proj in TEMPORAL:
            linear = nn.Linear(d, d)
            p = f"vision_model.encoder.layers.{i}.{proj}"
            linear.load_state_dict({"weight": vision[p + ".weight"], "bias": vision[p + ".bias"]})
            setattr(layer.temporal_attn, proj.split(".")[1], linear)
        encoder.layers.append(layer)
    torch.manual_seed(3)
    wrapped = get_peft_model(
        encoder, LoraConfig(r=2, lora_alpha=16, target_modules=list(TEMPORAL), init_lora_weights=False)
    )
    lora = {"vision_model.encoder." + k: v.detach().clone() for k, v in wrapped.state_dict().items()}
    if not base_layer:  # peft before 0.7 kept the base weight on the LoRA layer itself
        lora = {k.replace(".base_layer.", "."): v for k, v in lora.items()}
    merged = {
        "vision_model.encoder." + k: v.detach().clone() for k, v in wrapped.merge_and_unload().state_dict().items()
    }
    stored = {k: v for k, v in vision.items() if k not in merged}
    return {**stored, **lora}, {**stored, **merged}


@pytest.mark.parametrize("base_layer", [True, False], ids=["peft-base_layer", "peft-0.4"])
def test_lora_tower_is_merged_at_conversion(tmp_path, base_layer):
    release = random_release(seed=2)
    llm, image, video = write_release(tmp_path, release, embedded=False)
    lora, merged = peft_lora_tower(release["video"], base_layer)
    assert any(".lora_A." in k for k in lora) and any("base_model.model" in k for k in lora)
    write_tower(video, lora, {**VISION, "add_time_attn": True, "num_frames": FRAMES, "lora_r": 2, "lora_alpha": 16})
    report = convert(str(llm), str(tmp_path / "out"), str(image), str(video))
    assert report.towers["video_tower"]["lora"] == {"merged_modules": 8, "lora_r": 2, "lora_alpha": 16, "scale": 8.0}
    tower = load_pretrained(tmp_path / "out", dtype=torch.float32).model.video_tower
    got = {"vision_model." + k: v for k, v in tower.state_dict().items() if "position_ids" not in k}
    assert set(got) == {k for k in merged if "position_ids" not in k}
    for key, value in got.items():
        torch.testing.assert_close(value, merged[key], atol=1e-6, rtol=1e-6, msg=key)
    p = "vision_model.encoder.layers.0.temporal_attn.q_proj.weight"
    assert not torch.allclose(got[p], release["video"][p])  # the adapter changed the weight


def test_unknown_lora_layout_fails_listing_every_key(tmp_path):
    release = random_release(seed=2)
    llm, image, video = write_release(tmp_path, release, embedded=False)
    lora, _ = peft_lora_tower(release["video"], base_layer=True)
    p = "vision_model.encoder.base_model.model.layers.0.temporal_attn."
    del lora[p + "q_proj.lora_B.default.weight"]
    lora[p + "k_proj.lora_magnitude_vector.default.weight"] = torch.ones(VISION["hidden_size"])  # DoRA
    write_tower(video, lora, {**VISION, "add_time_attn": True, "num_frames": FRAMES, "lora_r": 2, "lora_alpha": 16})
    with pytest.raises(ValueError) as err:
        convert(str(llm), str(tmp_path / "out"), str(image), str(video))
    message = str(err.value)
    assert f"{video}: unrecognised LoRA layout (3 keys" in message
    for key in (
        "layers.0.temporal_attn.q_proj.lora_A.default.weight",
        "layers.0.temporal_attn.q_proj.base_layer.weight",
        "layers.0.temporal_attn.k_proj.lora_magnitude_vector.default.weight",
    ):
        assert f"vision_model.encoder.{key}" in message
    assert not (tmp_path / "out" / "config.json").exists()


# --- bad input ----------------------------------------------------------------------------------------------------


def test_no_tower_folder_and_no_embedded_copy(tmp_path):
    llm, _, _ = write_release(tmp_path, random_release(), embedded=False, towers=False)
    with pytest.raises(
        ValueError,
        match=r"no --image-tower folder given, and .*Video-LLaVA-7B holds no embedded copy "
        r"of it \(no key model\.image_tower\.image_tower\.\* in pytorch_model-0000",
    ):
        convert(str(llm), str(tmp_path / "out"))


def test_shape_mismatch_names_the_file_and_key(tmp_path):
    release = random_release()
    llm, image, video = write_release(tmp_path, release, embedded=False)
    weights = torch.load(image / "pytorch_model.bin")
    weights["vision_model.encoder.layers.1.mlp.fc1.weight"] = torch.zeros(96, VISION["hidden_size"])
    torch.save(weights, image / "pytorch_model.bin")
    with pytest.raises(
        ValueError,
        match=r"mismatched: \['model\.image_tower\.encoder\.layers\.1\.mlp\.fc1\.weight: "
        r".*LanguageBind_Image/pytorch_model\.bin:vision_model\.encoder\.layers\.1\.mlp"
        r"\.fc1\.weight has \(96, 64\), the model needs \(128, 64\)",
    ):
        convert(str(llm), str(tmp_path / "out"), str(image), str(video))
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert len(report["mismatched"]) == 1 and not (tmp_path / "out" / "config.json").exists()


def test_a_different_embedded_copy_fails_unless_allowed(tmp_path):
    release = random_release()
    llm, image, video = write_release(tmp_path, release)
    other = random_release(seed=5)["video"]  # say, a LanguageBind_Video folder instead of LanguageBind_Video_merge
    write_tower(video, other, {**VISION, "add_time_attn": True, "num_frames": FRAMES})
    with pytest.raises(
        ValueError,
        match=r"the video_tower copy in .*Video-LLaVA-7B differs from .*LanguageBind_Video "
        r"beyond the bfloat16 tolerance.*vision_model\.encoder\.layers\.\*\.temporal",
    ):
        convert(str(llm), str(tmp_path / "out"), str(image), str(video))
    report = convert(str(llm), str(tmp_path / "out"), str(image), str(video), allow_tower_difference=True)
    assert report.towers["video_tower"]["embedded_copy"]["agree"] is False
    assert report.towers["image_tower"]["embedded_copy"]["agree"] is True


def test_video_tower_config_must_match_the_shared_vision_config(tmp_path):
    llm, image, video = write_release(tmp_path, random_release(), embedded=False)
    config = json.loads((video / "config.json").read_text())
    config["vision_config"]["hidden_act"] = "quick_gelu"
    del config["vision_config"]["layer_norm_eps"]  # omitted: LanguageBind's default 1e-5, so no difference
    (video / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"the image tower \(.*LanguageBind_Image/config\.json\) and the video tower "
        r"\(.*LanguageBind_Video/config\.json\) differ.*: hidden_act: 'gelu' vs "
        r"'quick_gelu'$",
    ):
        convert(str(llm), str(tmp_path / "out"), str(image), str(video))


def test_clashing_tokenizer_is_refused(tmp_path):
    llm, image, video = write_release(tmp_path, random_release(), embedded=False)
    tokenizer = llama_style_tokenizer()
    tokenizer.add_special_tokens({"pad_token": "<pad>"})  # at 32000, where <image> must go
    tokenizer.save_pretrained(llm)
    with pytest.raises(
        ValueError,
        match=r"Video-LLaVA-7B/tokenizer\.json: the tokenizer clashes with the placeholders "
        r"\{'<image>': 32000, '<video>': 32001\}.*'<pad>' has id 32000",
    ):
        convert(str(llm), str(tmp_path / "out"), str(image), str(video))
    tokenizer = llama_style_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<video>"]})  # <video> at 32000, not 32001
    tokenizer.save_pretrained(llm)
    with pytest.raises(ValueError, match=r"'<video>' has id 32000"):
        convert(str(llm), str(tmp_path / "out2"), str(image), str(video))
