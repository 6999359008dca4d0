"""Safe loading and no secrets: safetensors only, no model code unless trusted, no credentials in what the kit writes.

A pickle checkpoint runs whatever code it names when it is unpickled, so a folder holding only
pickles is refused before anything opens it; the trap below proves nothing was unpickled. Code a
model folder ships (``auto_map``) runs only when the profile sets ``model.trust_remote_code``.
Credentials in the environment never reach the notebooks, a run directory or its report.
"""
from __future__ import annotations

import ast
import json
import pickle
import re
import secrets
from pathlib import Path

import pytest
import torch
import transformers

from course_lib.config import PROFILES_DIR, load_profile
from course_lib.errors import ConfigError
from course_lib.models import load_model, load_tokenizer, process_device, require_safetensors

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent

SECRET_PATTERNS = {
    "Hugging Face token": re.compile(rb"\bhf_[A-Za-z0-9]{30,}"),
    "OpenAI key": re.compile(rb"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    "AWS access key id": re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a secret variable's value": re.compile(
        rb"\b(?:HF_TOKEN|HUGGING_FACE_HUB_TOKEN|OPENAI_API_KEY|WANDB_API_KEY|AWS_SECRET_ACCESS_KEY)[\"']?\s*[=:]\s*"
        rb"[\"']?[A-Za-z0-9_/+\-]{8,}"),
}


def find_secrets(folder: Path, planted: tuple[str, ...] = ()) -> list[str]:
    """Every file under ``folder`` (text or binary) that holds a secret pattern or one of the ``planted`` values."""
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits += [f"{path.relative_to(folder)}: {what}" for what, pattern in SECRET_PATTERNS.items() if pattern.search(data)]
        hits += [f"{path.relative_to(folder)}: the planted {value[:6]}..." for value in planted if value.encode() in data]
    return hits


def _tiny_llama():
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(config)


class _Trap:
    """Unpickling this creates the file it names: what a hostile checkpoint can do, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _profile_for(folder: Path, **overrides):
    return load_profile("tiny-cpu", {"model.name": str(folder), **overrides})


def test_a_folder_with_only_a_pickle_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "pickled"
    model = _tiny_llama()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(folder))} holds only pickle checkpoints "
                                          r"\(pytorch_model.bin\).*safetensors only.*save_pretrained"):
        load_model(_profile_for(folder))
    # The same weights as safetensors load: the refusal is about the file format, not the model.
    model.save_pretrained(tmp_path / "safe")
    loaded = load_model(_profile_for(tmp_path / "safe"), for_training=False)
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_the_refusal_comes_before_anything_is_unpickled(tmp_path):
    folder, marker = tmp_path / "hostile", tmp_path / "code_ran"
    _tiny_llama().config.save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(marker), protocol=2))  # torch.load's protocol
    with pytest.raises(ConfigError, match="only pickle checkpoints"):
        load_model(_profile_for(folder))
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # what weights_only=True does with it
        torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert not marker.exists()
    pickle.loads((folder / "pytorch_model.bin").read_bytes()).close()  # the trap is armed: plain unpickling runs it
    assert marker.exists()


def test_an_adapter_with_pickle_weights_or_a_pickled_base_is_refused(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "base")}))
    (adapter / "adapter_model.bin").write_bytes(b"not read")
    with pytest.raises(ConfigError, match=r"adapter holds only pickle checkpoints \(adapter_model.bin\)"):
        require_safetensors(adapter)
    (adapter / "adapter_model.bin").rename(adapter / "adapter_model.safetensors")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model.pt").write_bytes(b"not read")
    with pytest.raises(ConfigError, match=r"base holds only pickle checkpoints \(model.pt\)"):
        require_safetensors(adapter)


def test_a_hub_model_without_safetensors_gets_the_kits_message(tiny_profile, monkeypatch):
    def no_safetensors(source, **kwargs):  # what transformers raises for such a hub repository
        raise OSError(f"{source} does not appear to have a file named model.safetensors or "
                      "model.safetensors.index.json and thus cannot be loaded with `safetensors`. "
                      "Please do not set `use_safetensors=True`.")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_safetensors)
    with pytest.raises(ConfigError, match="some-org/pickled-model has no safetensors weights.*convert it once"):
        load_model(tiny_profile, "some-org/pickled-model")


def test_trust_remote_code_is_off_unless_the_profile_turns_it_on(tiny_base_path, monkeypatch):
    for path in PROFILES_DIR.glob("*.yaml"):
        assert load_profile(path).model.trust_remote_code is False, path.name
    seen = []

    def spy(source, **kwargs):
        seen.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    for trusted in (False, True):
        profile = _profile_for(tiny_base_path, **{"model.trust_remote_code": trusted})
        for load in (load_model, load_tokenizer):
            with pytest.raises(RuntimeError, match="stop here"):
                load(profile)
            assert seen[-1]["trust_remote_code"] is trusted
    assert all(kwargs["use_safetensors"] is True for kwargs in seen if "dtype" in kwargs)


def test_a_folder_that_ships_code_is_refused_without_trust(tmp_path):
    folder, marker = tmp_path / "custom", tmp_path / "code_ran"
    folder.mkdir()
    config = _tiny_llama().config.to_dict()
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "modeling_custom.py").write_text(f"open({str(marker)!r}, 'w')\n")
    for load in (load_model, load_tokenizer):
        with pytest.raises(ConfigError, match=r"ships its own code \('auto_map' in config.json\).*trust_remote_code"):
            load(_profile_for(folder))
    assert not marker.exists()


def test_each_process_of_a_launch_loads_onto_its_own_gpu(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert process_device("cuda") == "cuda:0" and process_device("cpu") == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "3")  # what accelerate launch / torchrun set in the fourth process
    assert process_device("cuda") == "cuda:3" and process_device("cpu") == "cpu"


def test_every_torch_load_in_the_kit_is_weights_only():
    calls = []
    for path in (REPO / "course_lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", safe))
    assert calls, "the kit loads its PPO checkpoint state with torch.load"
    assert [where for where, safe in calls if not safe] == []


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    token = "hf_" + secrets.token_hex(17)
    (tmp_path / "cell.ipynb").write_text(json.dumps({"outputs": [{"text": f"HF_TOKEN={token}"}]}))
    (tmp_path / "blob.bin").write_bytes(b"\x00AKIA" + b"ABCDEFGHIJKLMNOP" + b"\x00")
    hits = find_secrets(tmp_path, (token,))
    assert "cell.ipynb: Hugging Face token" in hits and "cell.ipynb: a secret variable's value" in hits
    assert any(hit.startswith("cell.ipynb: the planted") for hit in hits) and "blob.bin: AWS access key id" in hits


def test_the_notebooks_hold_no_secrets():
    assert find_secrets(REPO / "notebooks") == []


@pytest.mark.slow
def test_a_run_directory_holds_no_secret_from_the_environment(tmp_path, monkeypatch):
    """Credentials in the environment of a run never reach its folder: a short SFT stage, notebook 00's record, the report."""
    from course_lib.data import ensure_curated_data
    from course_lib.env import environment_report
    from course_lib.preflight import machine_facts
    from course_lib.report import build_report
    from course_lib.results import record_metrics
    from course_lib.stages import RunContext, SFTStageConfig, run_sft

    planted = {"HF_TOKEN": "hf_" + secrets.token_hex(17), "OPENAI_API_KEY": "sk-proj-" + secrets.token_hex(20),
               "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(), "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
               "WANDB_API_KEY": secrets.token_hex(20)}
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    run = RunContext.create(tmp_path / "run", "tiny-cpu")
    ensure_curated_data(run.run_dir, seed=0, sizes={"sft_per_domain": 12, "prefs_per_domain": 12, "eval_per_domain": 10})
    run_sft(SFTStageConfig(max_steps=2, eval_steps=1, save_steps=1, logging_steps=1, eval_prompts=2, max_new_tokens=4,
                           progress=False), run)
    record_metrics(run.run_dir, "00_setup", {"environment": environment_report(),
                                             "preflight": machine_facts(str(run.run_dir), check_hub=False).to_dict()})
    build_report(run.run_dir)
    assert (run.run_dir / "sft" / "checkpoints").is_dir() and (run.run_dir / "report.html").is_file()
    assert find_secrets(run.run_dir, tuple(planted.values())) == []
