"""Image-side staged training (LLaVA-1.5) end to end on a tiny instruction set: stages, failures, checkpoint, CLI."""

import json
import os
import re

import pytest
from PIL import Image, ImageDraw
from transformers import AutoTokenizer

import image_llavolta.train as image_train
from image_llavolta.checkpoint import load_pretrained
from image_llavolta.configs import tiny_llava_config
from image_llavolta.data import InstructionDataset, SampleFailure
from image_llavolta.models.llava import LlavoltaForConditionalGeneration
from image_llavolta.tokenizer import build_word_tokenizer
from image_llavolta.train_config import load_config
from image_llavolta.trainer import StageTally
from llavolta import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS_PER_IMAGE = 16  # 28-px images, 7-px patches: 4 x 4 patches, CLS dropped
POOLED_PER_IMAGE = 4  # stride 4: 16 / 4 windows
SCHEME = [{"layer": 1, "stride": 4, "fraction": 0.5}, {"none": True, "fraction": 0.5}]
SHAPES = {"circle": "ellipse", "square": "rectangle"}
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60)}


def test_a_stage_tally_reports_eq3_over_its_summed_tokens():
    # N=32, one image of 576 tokens per step: a K=2,S=8 step (2·576 + 30·72 = 3312) and a stock one (18432)
    tally = StageTally(steps=2, visual_in=2 * 576, visual_out=72 + 576, tokens_over_layers=3312 + 18432)
    assert tally.as_row("mixed", 32)["compression_ratio"] == round(2 * 18432 / (3312 + 18432), 4)  # 1.6953
    assert StageTally(visual_in=576, tokens_over_layers=3312).as_row("K=2,S=8", 32)["compression_ratio"] == 5.5652
    assert StageTally().as_row("no visual tokens", 32)["compression_ratio"] == 1.0


def turns(*values):
    return [{"from": ("human", "gpt")[i % 2], "value": v} for i, v in enumerate(values)]


def shape_image(path, colour, shape, size):
    image = Image.new("RGB", size, "white")
    w, h = size
    getattr(ImageDraw.Draw(image), SHAPES[shape])([w // 5, h // 5, 4 * w // 5, 4 * h // 5], fill=COLOURS[colour])
    image.save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """11 image records, 4 text-only ones and one whose image is missing: 16 records in one LLaVA-format file."""
    root = tmp_path_factory.mktemp("image_data")
    (root / "images").mkdir()
    records = []
    for i in range(11):
        colour, shape = list(COLOURS)[i % 3], list(SHAPES)[i % 2]
        name = f"{colour}_{shape}_{i}.png"
        shape_image(root / "images" / name, colour, shape, (40, 30) if i % 2 else (30, 40))  # padded to square
        records.append(
            {
                "id": f"img-{i}",
                "image": name,
                "conversations": turns(
                    "<image>\nwhat colour is the shape ?", f"{colour} .", "and its shape ?", f"a {shape} ."
                ),
            }
        )
    records += [{"id": f"text-{c}", "conversations": turns(f"is {c} a colour ?", "yes .")} for c in COLOURS]
    records.append({"id": "text-sky", "conversations": turns("what colour is the sky ?", "blue .")})
    records.append(
        {
            "id": "img-missing",
            "image": "missing.png",
            "conversations": turns("<image>\nwhat colour is the shape ?", "red ."),
        }
    )
    (root / "train.json").write_text(json.dumps(records))
    return root


def run_args(data, out):
    """key=value overrides of a tiny run on `data`."""
    return [
        f"output_dir={out}",
        "model.tiny={layers: 2, hidden: 32, image_size: 28, patch_size: 7}",
        f"data.train=[{data / 'train.json'}]",
        f"data.image_root={data / 'images'}",
        "data.max_length=256",
        "data.max_failure_share=0.1",
        "optim.per_device_batch_size=4",
        "optim.lr=1e-3",
        f"scheme={json.dumps(SCHEME)}",
        "logging_steps=100",
    ]


def test_two_stage_image_run(data, tmp_path):
    out = tmp_path / "run"
    report = image_train.train(load_config(None, run_args(data, out)))
    # 12 image records -> 3 global batches of 4, 4 text records -> 1: 4 optimizer steps, 2 per stage
    assert report["total_optimizer_steps"] == 4
    assert report["stage_by_step"] == {"0": "K=1,S=4", "1": "K=1,S=4", "2": "none", "3": "none"}
    first, last = report["stages"]
    assert (first["optimizer_steps"], last["optimizer_steps"]) == (2, 2)
    # seed 0 puts two image batches in the first stage (one short of the missing image), and the third image
    # batch and the text batch in the last
    assert (first["samples"], last["samples"]) == (4 + 3, 4 + 4)
    assert (first["visual_tokens_in"], first["visual_tokens_out"]) == (7 * TOKENS_PER_IMAGE, 7 * POOLED_PER_IMAGE)
    assert first["compression_ratio"] == pytest.approx(2 * 16 / (1 * 4 + 1 * 16))  # Eq. 3: N=2, K=1, L=16, L_out=4
    assert last["visual_tokens_in"] == last["visual_tokens_out"] == 4 * TOKENS_PER_IMAGE
    assert last["compression_ratio"] == 1.0
    assert all(s["mean_loss"] is not None and s["mean_loss"] == s["mean_loss"] for s in report["stages"])

    # the missing image: logged with its record and file, counted, not replaced by another sample
    assert report["failed_samples"] == 1 and first["samples"] + last["samples"] == 15
    logged = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["id"], f["path"]) for f in logged] == [("img-missing", str(data / "images" / "missing.png"))]
    assert logged[0]["step"] in (0, 1)  # in a first-stage batch
    assert "cannot read image" in logged[0]["reason"]

    # the checkpoint: a LLaVA that loads strictly, without compression (the last stage's setting)
    model = load_pretrained(out)
    assert isinstance(model, LlavoltaForConditionalGeneration) and model.compression_spec is None
    tokenizer = AutoTokenizer.from_pretrained(out)
    # the placeholder id is the tokenizer's <image> (second to last), not the last id (<video>)
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>") == len(tokenizer) - 2
    assert json.loads((out / "train_report.json").read_text())["stages"] == report["stages"]


def test_tiny_config_takes_the_placeholder_id():
    assert tiny_llava_config(vocab_size=50).image_token_id == 49
    assert tiny_llava_config(vocab_size=50, image_token_index=48).image_token_id == 48
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny_llava_config(vocab_size=50, image_token_index=50)


def test_tiny_configs_size_the_vision_tower():
    from video_llavolta.configs import tiny_video_llava_config

    for cfg in (
        tiny_llava_config(vision={"hidden": 48, "layers": 3, "heads": 4}),
        tiny_video_llava_config(vision={"hidden": 48, "layers": 3, "heads": 4}),
    ):
        v = cfg.vision_config
        assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (48, 3, 4, 96)
    assert tiny_llava_config().vision_config.hidden_size == 32  # the default tower is unchanged


@pytest.mark.parametrize("side", ["image", "video"])
def test_tiny_text_settings_reach_the_decoders_initialisation(side, tmp_path):
    """`model.tiny.text` sets LlamaConfig fields; initializer_range is the std of the run's random weights."""
    import video_llavolta.train as video_train

    module = image_train if side == "image" else video_train
    tokenizer = build_word_tokenizer(["what colour ? red ."])
    stds = {}
    for std in (0.02, 0.2):
        config = load_config(
            None,
            [
                f"output_dir={tmp_path}",
                "data.train=[unused.json]",
                f"model.tiny={{layers: 2, hidden: 64, text: {{initializer_range: {std}}}}}",
            ],
        )
        model = module.model_for_run(config, tokenizer)
        assert model.config.text_config.initializer_range == std
        decoder = model.model.language_model
        stds[std] = [
            decoder.layers[0].self_attn.q_proj.weight.std().item(),
            decoder.embed_tokens.weight.std().item(),
            model.lm_head.weight.std().item(),
        ]
    for std, measured in stds.items():  # 4096+ draws each: within 10% of the asked std
        assert measured == pytest.approx([std] * 3, rel=0.1)


def test_video_record_is_an_error_at_load(tmp_path):
    records = [
        {"id": "i1", "image": "a.png", "conversations": turns("<image>\nwhat ?", "red .")},
        {"id": "v1", "video": "a.mp4", "conversations": turns("<video>\nwhat ?", "red .")},
    ]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(records))
    tokenizer = build_word_tokenizer(["what ? red ."])
    config = tiny_llava_config(vocab_size=len(tokenizer), image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    with pytest.raises(
        ValueError, match=re.escape(f"{path}: record 1 (id 'v1'): a 'video' record") + ".*only image and text records"
    ):
        InstructionDataset(path, tokenizer, config)
    path.write_text(json.dumps(records[:1]))  # without the video record it loads (its image is missing: a failure)
    assert isinstance(InstructionDataset(path, tokenizer, config, image_root=tmp_path)[0], SampleFailure)


def test_zero3_is_accepted(data, tmp_path, monkeypatch):
    seen = {}

    def fake_run_training(config, model, tokenizer, dataset, collator, sampler, resume, callbacks):
        seen.update(config=config, model=model, dataset=dataset, batches=sampler(4, 0).global_batches())
        return {}

    monkeypatch.setattr(image_train, "run_training", fake_run_training)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"deepspeed: {ROOT}/configs/deepspeed/zero3.json\n")
    image_train.main([str(cfg), *run_args(data, tmp_path / "z3")])
    assert seen["config"].zero_stage() == 3
    assert isinstance(seen["model"], LlavoltaForConditionalGeneration)
    modalities = seen["dataset"].modalities()
    assert all(len({modalities[i] for i in batch}) == 1 for batch in seen["batches"])  # one modality per step


def test_llavolta_train_runs_an_image_config(data, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: {family: llava}\n")  # a tiny model names its family
    assert cli.main(["train", str(config), *run_args(data, tmp_path / "run"), "optim.max_steps=2"]) == 0
    report = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert report["total_optimizer_steps"] == 2 and report["config"]["model"]["family"] == "llava"
    assert isinstance(load_pretrained(tmp_path / "run"), LlavoltaForConditionalGeneration)
    # From the checkpoint a run needs no family: the checkpoint's model_type picks the image trainer.
    (tmp_path / "none.yaml").write_text("{}\n")
    assert (
        cli.main(
            [
                "train",
                str(tmp_path / "none.yaml"),
                *run_args(data, tmp_path / "again"),
                "model.tiny=null",
                f"model.path={tmp_path / 'run'}",
                "optim.max_steps=1",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "again" / "train_report.json").read_text())["total_optimizer_steps"] == 1


@pytest.mark.parametrize("name", ["finetune", "pretrain"])
def test_shipped_image_configs(name, monkeypatch):
    monkeypatch.chdir(ROOT)  # their paths are relative to the repository root
    config = load_config(f"configs/image/{name}.yaml")
    o = config.optim
    assert (o.per_device_batch_size, o.epochs, o.warmup_ratio, o.scheduler) == (
        (16, 1, 0.03, "cosine") if name == "finetune" else (32, 1, 0.03, "cosine")
    )
    assert config.precision == "bf16" and config.phase == name
    if name == "finetune":
        assert config.learning_rate == 2e-5 and config.zero_stage() == 3
        assert config.scheme_obj().name == "four_wider_then_deeper"
        assert [s.label() for s in config.scheme_obj().stages] == ["K=2,S=8", "K=2,S=2", "K=16,S=2", "none"]
    else:
        assert config.learning_rate == 1e-3 and config.scheme_obj().final_spec is None


@pytest.mark.parametrize("grouped", [True, False])
def test_group_by_length_decides_whether_a_batch_holds_one_length(grouped):
    """`data.group_by_length` reaches the run's sampler: sorted batches of one length, or random mixes."""
    import random
    from types import SimpleNamespace

    lengths = [338, 339, 340, 341] * 100  # on the synthetic set, a question type has its own length
    random.Random(0).shuffle(lengths)
    dataset = SimpleNamespace(lengths=lambda: lengths, modalities=lambda: ["video"] * len(lengths))
    config = load_config(
        None, ["output_dir=x", "model.tiny={}", "data.train=[a.json]", f"data.group_by_length={str(grouped).lower()}"]
    )
    batches = image_train.batch_sampler(config, dataset)(8, 0).global_batches()
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    one_length = sum(len({lengths[i] for i in b}) == 1 for b in batches) / len(batches)
    # grouped: only batches across a length boundary mix (about 1 in 12); random: 4 * (1/4)^8 of them are pure
    assert one_length > 0.85 if grouped else one_length < 0.05
