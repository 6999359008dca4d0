"""Profiles: the shipped ones load; every kind of bad profile names file, key and expectation."""
from __future__ import annotations

import pytest

from course_lib.config import Profile, available_profiles, load_profile
from course_lib.errors import ConfigError

pytestmark = pytest.mark.unit


def write(tmp_path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_shipped_profiles_load_and_validate():
    assert {"tiny-cpu", "gpu-qlora"} <= set(available_profiles())
    tiny = load_profile("tiny-cpu")
    assert tiny.name == "tiny-cpu" and tiny.model.name == "tiny-base"
    assert tiny.quantization.load_in_4bit is False and tiny.device == "cpu"
    # A 2.6M-parameter reward model's adapters do not learn to read the question (docs/preference_feasibility.md).
    assert tiny.lora.enabled and tiny.lora.reward is False


def test_gpu_qlora_profile_is_a_qlora_recipe():
    gpu = load_profile("gpu-qlora")
    q = gpu.quantization
    assert (q.load_in_4bit, q.quant_type, q.double_quant, q.compute_dtype) == (True, "nf4", True, "auto")
    assert gpu.model.dtype == "auto"  # bf16 or fp16, chosen for the GPU (course_lib.preflight.choose_precision)
    assert gpu.lora.enabled and gpu.lora.reward and gpu.lora.target_modules == "all-linear"
    assert gpu.lora.r > 0 and gpu.lora.alpha > 0 and 0 <= gpu.lora.dropout < 1
    assert gpu.training.gradient_checkpointing and gpu.training.optim == "paged_adamw_8bit"
    assert "/" in gpu.model.name  # a hub id


def test_overrides_replace_dotted_keys():
    p = load_profile("tiny-cpu", {"budgets.sft": 7, "lora.dropout": 0.1})
    assert p.budgets.sft == 7 and p.lora.dropout == 0.1


def test_ints_are_accepted_for_floats(tmp_path):
    p = load_profile(write(tmp_path, "lora:\n  dropout: 0\n"))
    assert p.lora.dropout == 0.0 and isinstance(p.lora.dropout, float)


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("model:\n  nmae: x\n", "model.nmae", "unknown setting"),
        ("lora:\n  r: sixteen\n", "lora.r", "expected int"),
        ("lora:\n  r: 0\n", "lora.r", ">= 1"),
        ("lora:\n  dropout: 1.5\n", "lora.dropout", "<= 0.9"),
        ("device: tpu\n", "device", "one of 'auto', 'cpu', 'cuda'"),
        ("quantization:\n  load_in_4bit: yes-please\n", "quantization.load_in_4bit", "expected bool"),
        ("budgets: 3\n", "budgets", "expected a mapping"),
        ("quantization:\n  load_in_4bit: true\nlora:\n  enabled: false\n", "lora.enabled", "cannot be trained"),
        ("quantization:\n  load_in_4bit: true\nlora:\n  reward: false\n", "lora.reward", "cannot be trained"),
    ],
)
def test_bad_profiles_name_file_key_and_expectation(tmp_path, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message and key in message and expected in message
    assert info.value.key == key


def test_missing_profile_file_and_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected one of: .*tiny-cpu"):
        load_profile("no-such-profile")


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "model:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d"):
        load_profile(path)


def test_profile_round_trips_through_to_dict():
    p = load_profile("gpu-qlora")
    data = p.to_dict()
    assert isinstance(Profile(**{**data, "model": p.model, "quantization": p.quantization, "lora": p.lora,
                                 "training": p.training, "data": p.data, "budgets": p.budgets}), Profile)
    assert data["quantization"]["quant_type"] == "nf4"
