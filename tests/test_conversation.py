"""vicuna_v1 / llava_v1 prompts, the template a checkpoint records, and placeholder expansion: token counts that
match the model's vision config."""

import pytest
import torch
from test_towers import tiny
from tiny_models import FRAMES, pixels
from tiny_tokenizer import word_tokenizer

from image_llavolta.configs import llava15_config, tiny_llava_config
from image_llavolta.configs import placeholder_tokens as image_placeholders
from image_llavolta.conversation import (
    LLAVA_V1,
    TEMPLATE_KEY,
    VICUNA_V1,
    checkpoint_template,
    get_template,
    record_template,
    resolve_template,
    tokenize_prompt,
)
from video_llavolta.configs import placeholder_tokens, tiny_video_llava_config, video_llava_config

# Video-LLaVA's videollava/conversation.py: conv_vicuna_v1 and conv_llava_v1 differ only in the system message
# ("user" / "human"); both SeparatorStyle.TWO with sep " ", sep2 "</s>", roles USER / ASSISTANT.
SYSTEMS = {
    "vicuna_v1": "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "llava_v1": "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
}


@pytest.mark.parametrize("name,template", [("vicuna_v1", VICUNA_V1), ("llava_v1", LLAVA_V1)])
def test_templates_render_as_upstream(name, template):
    system = SYSTEMS[name]
    assert get_template(name) is template
    assert template.render(["<video>\nWhat colour?"]) == system + " USER: <video>\nWhat colour? ASSISTANT:"
    assert template.render(["hi", "hello", "more?"]) == system + " USER: hi ASSISTANT: hello</s>USER: more? ASSISTANT:"
    assert template.render(["hi", "hello"], add_generation_prompt=False) == system + " USER: hi ASSISTANT: hello</s>"
    assert template.to_dict() == {
        "name": name,
        "system": system,
        "roles": ["USER", "ASSISTANT"],
        "sep": " ",
        "sep2": "</s>",
    }
    with pytest.raises(ValueError, match="nothing to generate"):
        template.render(["hi", "hello"])
    with pytest.raises(ValueError, match="unknown conversation template 'llama_2'"):
        get_template("llama_2")


def test_checkpoint_records_its_template():
    config = tiny_video_llava_config()
    assert checkpoint_template(config) is VICUNA_V1  # nothing recorded: the training template
    record_template(config, "llava_v1")
    assert getattr(config, TEMPLATE_KEY) == "llava_v1" and checkpoint_template(config) is LLAVA_V1
    assert resolve_template(config) is LLAVA_V1  # the default at inference
    assert resolve_template(config, "vicuna_v1") is VICUNA_V1 and resolve_template(config, VICUNA_V1) is VICUNA_V1
    with pytest.raises(ValueError, match="unknown conversation template 'chatml'"):
        record_template(config, "chatml")
    setattr(config, TEMPLATE_KEY, "chatml")
    with pytest.raises(ValueError, match="llavolta_template: unknown conversation template 'chatml'"):
        checkpoint_template(config)


def test_real_model_token_counts():
    # LLaVA-1.5: 336/14 = 24² = 576; Video-LLaVA: 224/14 = 16² = 256 per image, 257 per frame × 8 frames = 2056
    assert image_placeholders(llava15_config())["<image>"] == (32000, 576)
    video = placeholder_tokens(video_llava_config())
    assert video["<image>"] == (32000, 256) and video["<video>"] == (32001, 2056)
    assert placeholder_tokens(video_llava_config(num_frames=16))["<video>"][1] == 16 * 257
    assert video_llava_config().video_seq_length == 2056


def test_prompt_ids_fit_the_model():
    tokenizer = word_tokenizer(96)
    model = tiny(temporal=False)
    cfg = model.config
    prompt = VICUNA_V1.render(["<video>\nwhat colour is the circle ?"])
    ids = tokenize_prompt(tokenizer, prompt, placeholder_tokens(cfg))
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(cfg.video_token_id) == FRAMES * 17  # 4×4 patches + CLS per 28-px frame
    # the text around the placeholder is tokenized chunk by chunk, exactly as the tokenizer does it
    before, after = prompt.split("<video>")
    start = 1 + len(tokenizer(before, add_special_tokens=False)["input_ids"])
    assert ids[1:start] == tokenizer(before, add_special_tokens=False)["input_ids"]
    assert ids[start + FRAMES * 17 :] == tokenizer(after, add_special_tokens=False)["input_ids"]
    with torch.no_grad():  # the model accepts exactly this many placeholders
        model(input_ids=torch.tensor([ids]), pixel_values_videos=pixels(1, frames=FRAMES))
        with pytest.raises(ValueError):  # a 4-frame video gives half the features
            model(input_ids=torch.tensor([ids]), pixel_values_videos=pixels(1, frames=FRAMES // 2))


def test_image_prompt_counts_follow_the_config():
    tokenizer = word_tokenizer(128)
    cfg = tiny_llava_config(image_size=42, patch_size=7)  # 6×6 patches
    ids = tokenize_prompt(tokenizer, "<image>\nwhat shape ?", image_placeholders(cfg))
    assert ids.count(cfg.image_token_id) == 36
    both = tokenize_prompt(tokenizer, "<image> and <video>", placeholder_tokens(tiny_video_llava_config(num_frames=4)))
    assert both.count(126) == 16 and both.count(127) == 4 * 17
