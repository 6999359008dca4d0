"""The shipped ``accelerate launch`` configs, read by accelerate's own code the way ``accelerate launch`` reads them.

Three levels: accelerate's config classes load each file (unknown top-level keys fail there); every
key of the FSDP and DeepSpeed sections is an option ``accelerate launch`` knows (a misspelt one
would be dropped silently); and the launcher's own validation and environment turn each file into
the FSDP or DeepSpeed plugin a training process builds, checked field by field. DeepSpeed is not
installed: accelerate's plugin builds DeepSpeed's config dict without it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from course_lib.accelerate_configs import CONFIGS_DIR, config_names, config_path
from course_lib.errors import ConfigError

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent

DISTRIBUTED_TYPE = {
    "multi_gpu": DistributedType.MULTI_GPU,
    "fsdp": DistributedType.FSDP,
    "deepspeed_zero2": DistributedType.DEEPSPEED,
    "deepspeed_zero3": DistributedType.DEEPSPEED,
    "cpu_gloo": DistributedType.MULTI_GPU,  # several processes; on a machine without GPUs they join over gloo
}


def _launch_args(name: str, *flags: str):
    """What ``accelerate launch --config_file <name> [flags] train.py`` resolves, by accelerate's parser and checks."""
    args = launch_command_parser().parse_args(["--config_file", str(config_path(name)), *flags, "train.py"])
    args, _, _ = _validate_launch_command(args)
    return args


def _use_launch_env(env: dict[str, str], monkeypatch) -> None:
    """Set the variables the launcher hands a training process (the plugins read them)."""
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)


def test_the_configs_shipped_are_the_configs_tested():
    assert config_names() == sorted(DISTRIBUTED_TYPE)
    with pytest.raises(ConfigError, match="no shipped accelerate config named 'zero9'.*fsdp"):
        config_path("zero9")
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "accelerate_configs/*.yaml" in package_data["course_lib"]  # a wheel carries them


@pytest.mark.parametrize("name", sorted(DISTRIBUTED_TYPE))
def test_accelerate_loads_each_config(name):
    config = load_config_from_file(str(config_path(name)))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == DISTRIBUTED_TYPE[name]
    assert (config.num_machines, config.num_processes) == (1, 2)
    assert config.mixed_precision == ("no" if name == "cpu_gloo" else "bf16")
    assert config.use_cpu is (name == "cpu_gloo")
    assert bool(config.fsdp_config) is (name == "fsdp")
    assert bool(config.deepspeed_config) is name.startswith("deepspeed")


def test_every_fsdp_and_deepspeed_key_is_a_launch_option():
    options = {action.dest for action in launch_command_parser()._actions}
    for path in CONFIGS_DIR.glob("*.yaml"):
        config = load_config_from_file(str(path))
        # The launcher copies fsdp_config.x to its option fsdp_x and deepspeed_config.x to x.
        keys = [k if k.startswith("fsdp") else f"fsdp_{k}" for k in config.fsdp_config] + list(config.deepspeed_config)
        assert set(keys) <= options, f"{path.name}: {sorted(set(keys) - options)}"


def test_the_launcher_starts_the_processes_each_config_asks_for():
    for name, flags in {"multi_gpu": ("multi_gpu",), "cpu_gloo": ("multi_gpu", "use_cpu"), "fsdp": ("use_fsdp",),
                        "deepspeed_zero2": ("use_deepspeed",), "deepspeed_zero3": ("use_deepspeed",)}.items():
        args = _launch_args(name)
        switches = ("multi_gpu", "use_cpu", "use_fsdp", "use_deepspeed", "cpu")
        assert {s for s in switches if getattr(args, s, False)} == set(flags), name
        assert args.num_processes == 2
    assert _launch_args("multi_gpu", "--num_processes", "8").num_processes == 8  # the command line wins


def test_fsdp_shards_every_decoder_layer_of_a_lora_model(tiny_profile, monkeypatch):
    """FSDP2, full sharding, one shard unit per decoder layer, found from the model itself (LoRA on)."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    from course_lib.models import add_lora, load_model

    args = _launch_args("fsdp")
    _use_launch_env(prepare_multi_gpu_env(args), monkeypatch)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert not plugin.cpu_ram_efficient_loading and plugin.transformer_cls_names_to_wrap is None
    assert plugin.state_dict_type.name == "FULL_STATE_DICT" and not plugin.activation_checkpointing

    model = add_lora(load_model(tiny_profile, for_training=False), tiny_profile)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    units = [type(m).__name__ for m in model.modules() if policy(m)]
    assert units == ["LlamaDecoderLayer"] * model.config.num_hidden_layers
    # Each unit holds frozen base weights and trainable LoRA weights: the mix FSDP2 shards per parameter.
    layer = next(m for m in model.modules() if policy(m))
    assert {p.requires_grad for p in layer.parameters()} == {True, False}


@pytest.mark.parametrize("name, stage", [("deepspeed_zero2", 2), ("deepspeed_zero3", 3)])
def test_deepspeed_gets_its_zero_stage_and_leaves_the_rest_to_the_trainer(name, stage, monkeypatch):
    args = _launch_args(name)
    # accelerate launch records which DeepSpeed fields came from the config file before it launches.
    args.deepspeed_fields_from_accelerate_config = ",".join(load_config_from_file(str(config_path(name))).deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    _use_launch_env(env, monkeypatch)
    plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
    # Batch size and accumulation come from the trainer's arguments, so the profile stays the one setting.
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"
    assert plugin.zero3_init_flag is (stage == 3)
    assert zero["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)


def test_zero3_offloads_to_cpu_from_the_command_line(monkeypatch):
    args = _launch_args("deepspeed_zero3", "--offload_optimizer_device", "cpu", "--offload_param_device", "cpu")
    args.deepspeed_fields_from_accelerate_config = ""
    _use_launch_env(prepare_deepspeed_cmd_env(args)[1], monkeypatch)
    zero = DeepSpeedPlugin().deepspeed_config["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"


def test_the_module_prints_a_configs_path():
    out = subprocess.run([sys.executable, "-m", "course_lib.accelerate_configs", "fsdp"], capture_output=True, text=True)
    assert out.returncode == 0 and Path(out.stdout.strip()) == config_path("fsdp")
    bad = subprocess.run([sys.executable, "-m", "course_lib.accelerate_configs", "zero9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "zero9" in bad.stderr and "Traceback" not in bad.stderr


ALL_REDUCE = """
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import PartialState

state = PartialState(cpu=True)  # what TrainingArguments(use_cpu=True) asks for in the kit's CPU stages
total = torch.tensor([state.process_index + 1.0])
dist.all_reduce(total)
# One file per process: their prints would interleave on the shared stdout.
Path(sys.argv[1], f"rank_{state.process_index}.txt").write_text(
    f"{state.num_processes} {state.distributed_type.value} {dist.get_backend()} {total.item():.0f}")
# Both finish the collective before either exits; an early exit can abort the other mid-way.
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_cpu_gloo_starts_two_processes_that_sum_over_gloo(tmp_path):
    script = tmp_path / "all_reduce.py"
    script.write_text(ALL_REDUCE)
    accelerate = Path(sys.executable).with_name("accelerate")
    # No GPU visible, as on the CPU machines the config is for; torchrun's temporary files go to tmp_path.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)}
    out = subprocess.run([str(accelerate), "launch", "--config_file", str(config_path("cpu_gloo")), str(script),
                          str(tmp_path)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    # Two processes, one group over gloo: each saw the other's value in the sum 1 + 2.
    assert sorted(p.name for p in tmp_path.glob("rank_*.txt")) == ["rank_0.txt", "rank_1.txt"]
    assert {p.read_text() for p in tmp_path.glob("rank_*.txt")} == {"2 MULTI_CPU gloo 3"}
