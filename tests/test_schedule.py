"""Stage schedules (Table 1 / Table 7) and run configs."""

import pathlib

import pytest
import yaml

from image_llavolta.compression import CompressionSpec
from image_llavolta.schedule import SCHEMES, Scheme, Stage
from image_llavolta.train_config import load_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_table1_schemes():
    def stages(name):
        return [(s.spec and (s.spec.layer, s.spec.stride), round(s.fraction, 4)) for s in SCHEMES[name].stages]

    assert stages("single") == [(None, 1.0)]
    assert stages("two") == [((2, 8), 0.5), (None, 0.5)]
    assert stages("three_deeper") == [((2, 8), 0.3333), ((16, 8), 0.3333), (None, 0.3333)]
    assert stages("three_wider") == [((2, 8), 0.3333), ((2, 2), 0.3333), (None, 0.3333)]
    assert stages("four_wider_then_deeper") == [((2, 8), 0.25), ((2, 2), 0.25), ((16, 2), 0.25), (None, 0.25)]
    assert stages("four_deeper_then_wider") == [((2, 8), 0.25), ((16, 8), 0.25), ((16, 2), 0.25), (None, 0.25)]


def test_boundaries_are_optimizer_steps():
    scheme = SCHEMES["four_wider_then_deeper"]
    assert scheme.boundaries(10) == [2, 5, 8, 10]  # round(2.5) = 2, round(5) = 5, round(7.5) = 8
    labels = [scheme.stages[scheme.stage_index(s, 10)].label() for s in range(10)]
    assert labels == ["K=2,S=8"] * 2 + ["K=2,S=2"] * 3 + ["K=16,S=2"] * 3 + ["none"] * 2
    assert scheme.spec_at(9, 10) is None and scheme.final_spec is None
    with pytest.raises(ValueError, match="outside a run of 10"):
        scheme.stage_index(10, 10)
    split = Scheme.from_list("s", [{"layer": 2, "stride": 8, "fraction": 1.0}, {"none": True, "fraction": 0.0}])
    assert [split.stage_index(s, 4) for s in range(4)] == [0, 0, 0, 0]
    assert split.final_spec == CompressionSpec(2, 8)  # a 0% last stage never runs: the checkpoint says so


def test_scheme_files_match_the_tables():
    for name, scheme in SCHEMES.items():
        from_file = load_config(
            None,
            [
                "output_dir=x",
                "model.tiny={}",
                "data.train=[a.json]",
                f"scheme={ROOT / 'configs/schemes' / (name + '.yaml')}",
            ],
        ).scheme_obj()
        assert [(s.spec, round(s.fraction, 4)) for s in from_file.stages] == [
            (s.spec, round(s.fraction, 4)) for s in scheme.stages
        ]
    for a, b in ((25, 75), (75, 25), (90, 10), (100, 0)):
        data = yaml.safe_load((ROOT / f"configs/schemes/two_{a}_{b}.yaml").read_text())
        scheme = Scheme.from_list(data["name"], data["stages"])
        assert [s.fraction for s in scheme.stages] == [a / 100, b / 100]


def test_bad_schemes_are_clear_errors():
    with pytest.raises(ValueError, match="fractions sum to 0.9"):
        Scheme.from_list("x", [{"layer": 2, "stride": 8, "fraction": 0.4}, {"none": True, "fraction": 0.5}])
    with pytest.raises(ValueError, match="unknown CompressionSpec field"):
        Stage.from_dict({"layer": 2, "strde": 8, "fraction": 1})
    with pytest.raises(ValueError, match="outside"):
        SCHEMES["three_deeper"].check_fits(8)  # K=16 needs at least 16 decoder layers


def test_run_config_validation_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "output_dir": "out",
                "model": {"tiny": {"layers": 4}},
                "data": {"train": ["t.json"]},
                "optim": {"per_device_batch_size": 2},
            }
        )
    )
    cfg = load_config(str(path), ["optim.lr=3e-4", "scheme=two", "data.max_length=128"])
    assert (cfg.optim.lr, cfg.optim.per_device_batch_size, cfg.data.max_length) == (3e-4, 2, 128)
    assert cfg.scheme_obj() is SCHEMES["two"] and cfg.learning_rate == 3e-4
    assert load_config(str(path), ["phase=pretrain"]).learning_rate == 1e-3  # LLaVA's pretrain default
    with pytest.raises(ValueError, match=r"optim: unknown field\(s\) \['lrr'\]"):
        load_config(str(path), ["optim.lrr=1"])
    with pytest.raises(ValueError, match="phase must be one of"):
        load_config(str(path), ["phase=sft"])
    with pytest.raises(ValueError, match="exactly one of 'path'"):
        load_config(str(path), ["model.path=/m"])
    with pytest.raises(ValueError, match="neither a built-in"):
        load_config(str(path), ["scheme=nope"])
    deepspeed = load_config(str(path), [f"deepspeed={ROOT / 'configs/deepspeed/zero3.json'}"])
    assert deepspeed.zero_stage() == 3


def test_scheme_rescaled_to_a_shallower_model():
    scaled = SCHEMES["four_wider_then_deeper"].for_depth(8, 32)  # K=2 -> max(1, round(0.5)) = 1, K=16 -> 4
    assert [s.spec and (s.spec.layer, s.spec.stride) for s in scaled.stages] == [(1, 8), (1, 2), (4, 2), None]
    assert [s.fraction for s in scaled.stages] == [0.25] * 4
    assert SCHEMES["two"].for_depth(32, 32).stages == SCHEMES["two"].stages


def test_paper_schemes_map_onto_28_layer_and_tiny_decoders():
    # Qwen2-7B (Qwen2-VL-7B, Qwen2.5-VL-7B, LLaVA-OneVision-7B) has 28 layers: K = round(K * 28 / 32)
    layers = lambda scheme: [s.spec and s.spec.layer for s in scheme.stages]  # noqa: E731
    assert layers(SCHEMES["four_deeper_then_wider"].for_depth(28)) == [2, 14, 14, None]  # 1.75 -> 2, 14
    assert layers(SCHEMES["four_deeper_then_wider"].for_depth(4)) == [1, 2, 2, None]  # 0.25 -> max(1, 0), 2
    assert layers(SCHEMES["three_wider"].for_depth(2)) == [1, 1, None]
    strides = [s.spec and s.spec.stride for s in SCHEMES["four_wider_then_deeper"].for_depth(28).stages]
    assert strides == [8, 2, 2, None]  # strides do not depend on depth
