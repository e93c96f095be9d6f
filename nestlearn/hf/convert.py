"""Between nestlearn run folders and ``transformers`` models, tokenizers included.

    model, tok = from_run("runs/text-tiny")          # the latest checkpoint of a nestlearn run
    model.save_pretrained("hf/text-tiny"); tok.save_pretrained("hf/text-tiny")
    export_run(model, "runs/back", tok)              # and back: a run folder nestlearn reads
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerFast

from ..data.tokenizer import BPETokenizer, ByteTokenizer, load_tokenizer
from ..models import CausalLM
from .modeling import NestlearnForCausalLM, from_nestlearn


def _byte_level_chars() -> dict[int, str]:
    """Byte → the printable character byte-level BPE writes it as (printable bytes stand for themselves,
    the rest are shifted past 255)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tokenizer_for(tok: ByteTokenizer | BPETokenizer | str | Path) -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast`` giving the same ids as a nestlearn tokenizer (or its saved file).

    nestlearn vocabularies have no special tokens; id 0 (the NUL byte, absent from text) is named the
    end-of-text token, which ``generate`` and lm-eval (its prefix token) need."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if isinstance(tok, (str, Path)):
        tok = load_tokenizer(tok)
    if isinstance(tok, ByteTokenizer):  # byte ids 0–255 as a byte-level BPE without merges
        vocab = {c: b for b, c in _byte_level_chars().items()}
        backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
    elif isinstance(tok, BPETokenizer):
        backend = tok._tok
    else:
        raise ValueError(f"not a nestlearn tokenizer: {type(tok).__name__}")
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=backend.id_to_token(0))


def from_run(run_dir: str | Path, step: int | None = None
             ) -> tuple[NestlearnForCausalLM, PreTrainedTokenizerFast | None]:
    """The model of a nestlearn run folder (its latest checkpoint, or ``step``) and its tokenizer (None for a
    run on generated data)."""
    from safetensors.torch import load_file

    from ..train.config import load_config
    from ..train.loop import check_weights, latest_checkpoint

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise ValueError(f"{run} is not a nestlearn run folder (no config.yaml)")
    ckpt = run / "checkpoints" / f"step_{step:07d}" if step is not None else latest_checkpoint(run)
    if not (ckpt / "model.safetensors").is_file():
        raise ValueError(f"no weights at {ckpt / 'model.safetensors'}")
    model = CausalLM(load_config(run / "config.yaml").model)
    weights = load_file(str(ckpt / "model.safetensors"))
    check_weights(model, weights, ckpt, model.cfg.tie_embeddings)
    model.load_state_dict(weights, strict=False)  # a tied head comes with the embedding
    tok_file = run / "tokenizer.json"
    return from_nestlearn(model.eval()), tokenizer_for(tok_file) if tok_file.is_file() else None


def export_run(model: NestlearnForCausalLM | CausalLM, out_dir: str | Path,
               tokenizer: PreTrainedTokenizerFast | None = None) -> Path:
    """Write a nestlearn run folder (config.yaml with the model section, a step-0 checkpoint of the weights and
    a fresh optimizer, tokenizer.json) holding ``model``; ``from_run`` reads it back."""
    from ..train.config import RunConfig
    from ..train.loop import Trainer

    net = model.model if isinstance(model, NestlearnForCausalLM) else model
    cfg = RunConfig(model=net.cfg)
    cfg.train.out_dir, cfg.train.progress = str(out_dir), False
    trainer = Trainer(cfg, model=net, batches=())  # the model only: no data is read
    trainer.save()
    if tokenizer is not None:
        tokenizer.backend_tokenizer.save(str(Path(out_dir) / "tokenizer.json"))
    return Path(out_dir)


__all__ = ["export_run", "from_run", "tokenizer_for"]
