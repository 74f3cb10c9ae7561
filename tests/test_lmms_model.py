"""The lmms-eval model wrapper on a tiny saved LLaVA: requests answered like one-by-one generation, compressed too.

The wrapper is exercised without lmms-eval (request objects with lmms-eval's `args` tuples); the end-to-end run
through lmms-eval's evaluator on a local task needs the optional extra and is skipped without it.
"""

import importlib.util
import json
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import IMAGE, tiny_llava
from tiny_tokenizer import word_tokenizer

from image_llavolta.compression import FROM_CONFIG, CompressionSpec, enable_compression
from image_llavolta.conversation import VICUNA_V1, tokenize_prompt
from image_llavolta.inputs import load_image
from image_llavolta.lmms_model import Llavolta, cut_at_stops, parse_compression_arg

SEED = 2
SUFFIX = "\nAnswer the question using a single word or phrase."
QUESTIONS = [
    "what colour is the shape ?",
    "how many objects are there ?",
    "is the shape red ?",
    "what shape is in the image ?",
]
NO_LMMS_EVAL = (
    "lmms-eval is not installed (the optional eval extra). Install it as the README says: pip install -c "
    "constraints.txt -e '.[eval]' && pip install -c constraints.txt --no-deps lmms-eval==0.7.3 (a plain install "
    "brings lmms-eval's torchvision, whose only torch-2.13 wheel here is a CUDA build that breaks transformers' "
    "LLaVA classes on the CPU torch, and downgrades av to <16)"
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny LLaVA and its tokenizer saved as a checkpoint directory (no compression stored)."""
    path = tmp_path_factory.mktemp("ckpt")
    enable_compression(tiny_llava(seed=SEED), None).save_pretrained(path)
    word_tokenizer(96).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(len(QUESTIONS)):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (18 + 3 * i, 26, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def reference(checkpoint, images):
    """Greedy answers one at a time, prompt written out here, with per-step scores; memoised per spec."""
    model = enable_compression(tiny_llava(seed=SEED), None)
    tokenizer = word_tokenizer(96)
    memo = {}

    @torch.no_grad()
    def answers(spec=None, new_tokens=4):
        key = (spec, new_tokens)
        if key not in memo:
            memo[key] = []
            for question, image in zip(QUESTIONS, images):
                prompt = VICUNA_V1.render([f"<image>\n{question}{SUFFIX}"])
                ids = torch.tensor([tokenize_prompt(tokenizer, prompt, {"<image>": (IMAGE, 16)})])
                pixels = load_image(image, model.config, pad_to_square=True)[None]
                out = model.generate(
                    input_ids=ids,
                    pixel_values=pixels,
                    max_new_tokens=new_tokens,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=2,
                    suppress_tokens=[IMAGE],
                    compression=spec,
                    output_logits=True,
                    return_dict_in_generate=True,
                )
                new = out.sequences[0, ids.shape[1] :]
                # log p of the generated tokens, from generate's own raw step logits (KV-cached decoding)
                logp = sum(float(torch.log_softmax(s[0], -1)[t]) for s, t in zip(out.logits, new))
                memo[key].append(
                    {
                        "text": tokenizer.decode(new, skip_special_tokens=True).strip(),
                        "tokens": [int(t) for t in new if int(t) != 2],
                        "logp": logp,
                    }
                )
        return memo[key]

    return answers


def request(*args):
    return SimpleNamespace(args=args)


def docs(images):
    return {"local": {"test": [{"image": path, "question": q} for q, path in zip(QUESTIONS, images)]}}


def visual(doc):
    return [Image.open(doc["image"])]


def test_model_arguments():
    assert parse_compression_arg("2:8") == CompressionSpec(2, 8)
    assert parse_compression_arg("2,8,random") == CompressionSpec(2, 8, "random")
    assert parse_compression_arg("none") is None and parse_compression_arg(None) is FROM_CONFIG
    with pytest.raises(ValueError, match="K,S"):
        parse_compression_arg("2x8")
    assert cut_at_stops("red. USER: next", ["USER:", "\n\n"]) == "red."
    assert cut_at_stops(" red ", None) == "red" and cut_at_stops("a||b", "||") == "a"


@pytest.mark.parametrize("compression", ["none", "1:4"])
def test_generate_until_equals_one_by_one_generation(checkpoint, images, reference, compression):
    spec = parse_compression_arg(compression)
    lm = Llavolta(pretrained=checkpoint, compression=compression, batch_size=3, device="cpu")
    lm.task_dict = docs(images)
    # Two generation lengths interleaved: answers must come back in request order.
    requests = [
        request(
            QUESTIONS[i] + SUFFIX,
            {"max_new_tokens": 4 if i % 2 == 0 else 2, "temperature": 0},
            visual,
            i,
            "local",
            "test",
        )
        for i in range(len(QUESTIONS))
    ]
    got = lm.generate_until(requests)
    long, short = reference(spec, 4), reference(spec, 2)
    assert got == [(long if i % 2 == 0 else short)[i]["text"] for i in range(len(QUESTIONS))]
    assert len({r["text"] for r in long}) > 1  # answers depend on the image
    if spec is not None:
        assert [r["text"] for r in long] != [r["text"] for r in reference(None, 4)]  # compression reaches the model


def test_stop_strings_and_explicit_placeholders(checkpoint, images, reference):
    lm = Llavolta(pretrained=checkpoint, compression="none")
    lm.task_dict = docs(images)
    first = reference(None, 4)[0]["text"]
    assert " " in first  # several words, so a stop string can cut it
    stop = first.split(" ")[1]
    got = lm.generate_until(
        [
            request(
                f"<image>\n{QUESTIONS[0]}{SUFFIX}", {"max_new_tokens": 4, "until": [stop]}, visual, 0, "local", "test"
            )
        ]
    )
    assert got == [first[: first.index(stop)].strip()]
    with pytest.raises(ValueError, match="2 <image> placeholder"):
        lm.generate_until([request("<image><image> what ?", {}, visual, 0, "local", "test")])
    with pytest.raises(ValueError, match="images only, not videos"):
        lm.generate_until([request("what ?", {}, lambda doc: ["clip.mp4"], 0, "local", "test")])


@pytest.mark.parametrize("compression", ["none", "1:4"])
def test_loglikelihood_matches_generation_scores(checkpoint, images, reference, compression):
    spec = parse_compression_arg(compression)
    lm = Llavolta(pretrained=checkpoint, compression=compression)
    lm.task_dict = docs(images)
    tokenizer = word_tokenizer(96)
    expected = reference(spec, 4)[1]
    greedy_text = tokenizer.decode(expected["tokens"])
    assert tokenizer(greedy_text, add_special_tokens=False)["input_ids"] == expected["tokens"]  # round trip
    first = tokenizer.decode(expected["tokens"][:1])
    other = next(w for w in ("w70", "w71") if w != first)  # a single token that greedy decoding does not pick first
    got = lm.loglikelihood(
        [
            request(QUESTIONS[1] + SUFFIX, greedy_text, visual, 1, "local", "test"),
            request(QUESTIONS[1] + SUFFIX, first, visual, 1, "local", "test"),
            request(QUESTIONS[1] + SUFFIX, lambda doc: other, visual, 1, "local", "test"),
        ]
    )
    assert got[0][1] is True and got[0][0] == pytest.approx(expected["logp"], abs=1e-4)
    assert got[1][1] is True and got[2][1] is False and got[2][0] < got[1][0]  # the greedy token is the likeliest


def test_unknown_model_argument_is_refused(checkpoint):
    with pytest.raises(ValueError, match=r"unknown llavolta model argument\(s\) \['pretrained_path'\]"):
        Llavolta(pretrained=checkpoint, pretrained_path="x")


@pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is None, reason=NO_LMMS_EVAL)
def test_lmms_eval_runs_a_local_task(tmp_path, checkpoint, images, reference, monkeypatch):
    """lmms-eval's evaluator on a task made of a YAML, a utils.py and a local JSONL: no Hub download."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models.registry_v2 import ModelRegistryV2
    from lmms_eval.tasks import TaskManager

    from video_llavolta.lmms_model import VideoLlavolta, manifest

    registry = ModelRegistryV2()
    registry.register_manifest(manifest())
    assert registry.get_model_class("llavolta") is VideoLlavolta

    answers = [r["text"] for r in reference(None, 4)]
    data = tmp_path / "local.jsonl"
    # the reference answer is right for questions 0 and 2 only: exact match 0.5
    data.write_text(
        "".join(
            json.dumps({"question_id": i, "image": path, "question": q, "answer": answers[i] if i % 2 == 0 else "zzz"})
            + "\n"
            for i, (q, path) in enumerate(zip(QUESTIONS, images))
        )
    )
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(
        textwrap.dedent("""
        from PIL import Image

        def doc_to_visual(doc):
            return [Image.open(doc["image"]).convert("RGB")]

        def doc_to_text(doc, lmms_eval_specific_kwargs=None):
            return doc["question"] + "\\nAnswer the question using a single word or phrase."

        def process_results(doc, results):
            return {"exact_match": float(results[0].strip() == doc["answer"])}
    """)
    )
    (tasks / "llavolta_local.yaml").write_text(
        textwrap.dedent(f"""
        task: llavolta_local
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.doc_to_visual
        doc_to_text: !function utils.doc_to_text
        doc_to_target: answer
        generation_kwargs:
          max_new_tokens: 4
          do_sample: false
        process_results: !function utils.process_results
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        metadata:
          version: 0.0
    """)
    )
    lm = Llavolta(pretrained=checkpoint, compression="none", batch_size=2)
    out = simple_evaluate(
        model=lm,
        tasks=["llavolta_local"],
        batch_size=2,
        log_samples=True,
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
    )
    assert out["results"]["llavolta_local"]["exact_match,none"] == pytest.approx(0.5)
    samples = sorted(out["samples"]["llavolta_local"], key=lambda s: s["doc_id"])
    assert [s["filtered_resps"][0] for s in samples] == answers
