"""A stand-in for a pretrained video encoder: the quickstart's tiny tower, trained on which object covers each patch.

Video-LLaVA starts from LanguageBind's video encoder, pretrained on millions of clips, and keeps it frozen. A tiny
random CLIP tower trained only through the language model's answer loss does not learn to see shapes in the
quickstart's few minutes: answers stay at chance. So the quickstart first trains its tower for two to three minutes with
a dense objective on the synthetic training split (per patch: the colour and shape of the object covering it, or
background; `data_prep.synthetic.patch_labels`), then freezes it and trains projector + LLM as Video-LLaVA does.
The heads used here are thrown away; only the tower's weights are kept.

The tower sees one frame at a time, so a batch is frames drawn from many videos, not whole videos: a video's frames
show the same objects, so 128 frames from 128 videos show eight times as many objects as 8 frames each from 16.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data_prep.synthetic import COLOURS, SHAPES, patch_labels
from image_llavolta.jsonio import read_jsonl
from video_llavolta.configs import num_frames
from video_llavolta.frames import frame_dir_name, read_frames
from video_llavolta.inputs import load_video

TARGETS = {"colour": len(COLOURS) + 1, "shape": len(SHAPES) + 1}  # classes per target, background included


@dataclass
class TowerPretrainConfig:
    """How long and how hard the tower trains."""

    steps: int = 1200
    batch_size: int = 128  # frames per step, each drawn from any training video
    lr: float = 2e-3
    decay_share: float = 0.25  # warm-up, constant lr, then a linear fall to 0 over this last share of the steps
    min_cover: float = 0.2  # share of a patch an object must cover to label it
    seed: int = 0

    def validate(self) -> TowerPretrainConfig:
        """Check the settings; returns self."""
        if (
            self.steps < 1
            or self.batch_size < 1
            or self.lr <= 0
            or not 0 < self.min_cover <= 1
            or not 0 < self.decay_share <= 1
        ):
            raise ValueError(
                "tower pretraining: steps and batch_size >= 1, lr > 0, 0 < min_cover <= 1, "
                f"0 < decay_share <= 1; got {self}"
            )
        return self


def load_patch_targets(metadata: str, frames_root: str, config, split: str = "train", min_cover: float = 0.2):
    """(pixels (N, T, 3, H, W), {target: (N, T, patches) ids}) for a synthetic split's pre-extracted frames."""
    vision = config.vision_config
    grid, frames_per_video = vision.image_size // vision.patch_size, num_frames(config)
    pixels, labels = [], {name: [] for name in TARGETS}
    for meta in read_jsonl(metadata):
        if meta["split"] != split:
            continue
        sampled = read_frames(os.path.join(frames_root, frame_dir_name(meta["video"])), num_frames=frames_per_video)
        pixels.append(load_video(sampled, config))  # the training pipeline's own processing
        for name, ids in patch_labels(meta, sampled.indices, grid, min_cover).items():
            labels[name].append(torch.from_numpy(ids))
    if not pixels:
        raise ValueError(f"{metadata}: no {split!r} videos to pretrain the tower on")
    return torch.stack(pixels), {name: torch.stack(ids) for name, ids in labels.items()}


def patch_features(model, frames: torch.Tensor) -> torch.Tensor:
    """The video tower's patch features (CLS dropped) at the projector's layer: (F, 3, H, W) -> (F, patches, hidden)."""
    out = model.model.video_tower(frames, output_hidden_states=True)
    return out.hidden_states[model.config.vision_feature_layer][:, 1:]


def lr_factor(step: int, config: TowerPretrainConfig) -> float:
    """The share of the peak lr at a 0-based step: 5% linear warm-up, constant, linear decay to 0 at the end."""
    # Shape is learned late, and only while the lr is high: the lr stays at its peak until the last `decay_share` of
    # the steps instead of falling from the start as a cosine schedule's does.
    warmup, decay = max(1, round(0.05 * config.steps)), max(1, round(config.decay_share * config.steps))
    return min(1.0, (step + 1) / warmup, (config.steps - step) / decay)


def pretrain_video_tower(
    model, pixels: torch.Tensor, labels: dict, config: TowerPretrainConfig, progress: bool = True
) -> dict:
    """Train the model's video tower in place on per-patch labels; returns a report (the image tower is untouched)."""
    config.validate()
    generator = torch.Generator().manual_seed(config.seed)
    hidden = model.config.vision_config.hidden_size
    with torch.random.fork_rng():  # seeded heads without touching the caller's global RNG
        torch.manual_seed(config.seed)
        heads = nn.ModuleDict({name: nn.Linear(hidden, classes) for name, classes in TARGETS.items()})
    tower = model.model.video_tower
    params = [*tower.parameters(), *heads.parameters()]
    for p in tower.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    frames = pixels.flatten(0, 1)  # (N·T, 3, H, W): the tower sees each frame on its own
    targets = {name: ids.flatten(0, 1) for name, ids in labels.items()}
    tower.train()
    started, losses = time.perf_counter(), []
    for _ in tqdm(range(config.steps), desc="tower pretraining", unit="step", disable=not progress):
        batch = torch.randint(0, len(frames), (config.batch_size,), generator=generator)
        features = patch_features(model, frames[batch])
        loss = sum(
            F.cross_entropy(heads[name](features).flatten(0, 1), targets[name][batch].flatten()) for name in TARGETS
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    tower.eval()
    with torch.no_grad():  # on object patches of the first training frames: did it learn, not how it generalises
        sample = torch.arange(min(len(frames), config.batch_size))
        features = patch_features(model, frames[sample])
        on_object = targets["colour"][sample] > 0
        accuracy = {
            name: (heads[name](features).argmax(-1) == targets[name][sample])[on_object].float().mean().item()
            for name in TARGETS
        }
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "settings": asdict(config),
        "seconds": round(time.perf_counter() - started, 1),
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(tail) / len(tail), 4),
        "train_object_patch_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
    }
