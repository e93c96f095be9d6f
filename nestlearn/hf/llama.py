"""A ``transformers`` Llama-family model as a nestlearn Transformer, and ad-hoc level stacking of it
into Hope-Attention (NL §7.3, §9.1: a pre-trained Llama's MLPs become CMS levels, attention kept).

    hope = stack_llama(llama, levels=[LevelConfig(16, 1e-3), LevelConfig(64, 1e-4)], init="split")

``llama_to_nestlearn`` is exact: the same logits (to float rounding). Rotary embeddings: a Llama rotates
the two halves of a head, nestlearn rotates interleaved pairs, so each head's query and key rows are
permuted (the attention scores are unchanged). Grouped key/value heads are repeated to full heads,
which is what the Llama computes. A sliding window used by every layer (Mistral) becomes the model's
``window``. Every conversion is checked on a probe sequence; a model it does not reproduce is refused.
"""

from __future__ import annotations

import torch

from ..layers import LevelConfig
from ..models import CausalLM, ModelConfig
from ..models.stacking import stack_levels
from .modeling import NestlearnForCausalLM, from_nestlearn


def _window(c) -> int | None:
    """The sliding window every layer uses (None: full attention); mixed layer kinds cannot convert."""
    window = getattr(c, "sliding_window", None)
    if getattr(c, "use_sliding_window", True) is False:
        window = None
    kinds = set(getattr(c, "layer_types", None) or [])
    if kinds == {"full_attention"}:
        window = None
    elif len(kinds) > 1:
        raise ValueError(f"this model mixes attention kinds across layers ({sorted(kinds)}); nestlearn's "
                         f"attention has one window for every layer")
    return window


def _check(llama) -> None:
    c = llama.config
    rope = getattr(c, "rope_parameters", None) or {}
    problems = []
    if c.hidden_act != "silu":
        problems.append(f"hidden_act={c.hidden_act!r} (only 'silu': the SwiGLU MLP)")
    layer = llama.model.layers[0]
    biased = [n for n, mod in (*layer.self_attn.named_children(), *layer.mlp.named_children())
              if getattr(mod, "bias", None) is not None]
    if biased:
        problems.append(f"biases on {biased} (nestlearn's projections have none)")
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type={rope.get('rope_type')!r} (only the default rotary embedding)")
    if getattr(c, "head_dim", None) not in (None, c.hidden_size // c.num_attention_heads):
        problems.append(f"head_dim={c.head_dim} ≠ hidden_size / num_attention_heads")
    if getattr(c, "pretraining_tp", 1) != 1:
        problems.append(f"pretraining_tp={c.pretraining_tp}")
    if problems:
        raise ValueError("this Llama cannot be converted exactly: " + "; ".join(problems))


def _rope_halves_to_pairs(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows ``[heads·D, ·]`` of a q or k projection, reordered per head from (first half, second half) to
    interleaved pairs: nestlearn's row 2j is the Llama's row j, row 2j+1 its row j + D/2."""
    D = w.shape[0] // heads
    w = w.view(heads, 2, D // 2, -1)  # [H, half, j, in]
    return w.transpose(1, 2).reshape(heads * D, -1)


def llama_to_nestlearn(llama) -> CausalLM:
    """A nestlearn ``transformer`` model computing what ``llama`` (a ``LlamaForCausalLM``) computes."""
    c = llama.config
    _check(llama)
    H, kv = c.num_attention_heads, c.num_key_value_heads
    rope = getattr(c, "rope_parameters", None) or {}
    cfg = ModelConfig(block="transformer", vocab_size=c.vocab_size, dim=c.hidden_size, layers=c.num_hidden_layers,
                      heads=H, max_seq_len=c.max_position_embeddings, mlp_mult=c.intermediate_size / c.hidden_size,
                      tie_embeddings=bool(c.tie_word_embeddings), rope_base=float(rope.get("rope_theta", 10000.0)),
                      norm_eps=float(c.rms_norm_eps), window=_window(c))
    src = llama.model
    dtype = src.embed_tokens.weight.dtype
    model = CausalLM(cfg).to(dtype)
    D = c.hidden_size // H
    with torch.no_grad():
        model.embed.weight.copy_(src.embed_tokens.weight)
        model.norm.weight.copy_(src.norm.weight)
        if not cfg.tie_embeddings:
            model.head.weight.copy_(llama.lm_head.weight)
        for layer, block in zip(src.layers, model.blocks, strict=True):
            a = layer.self_attn
            repeat = lambda w: w.view(kv, D, -1).repeat_interleave(H // kv, dim=0).reshape(H * D, -1)  # noqa: E731
            q = _rope_halves_to_pairs(a.q_proj.weight, H)
            k = _rope_halves_to_pairs(repeat(a.k_proj.weight), H)
            block.mixer.qkv.weight.copy_(torch.cat([q, k, repeat(a.v_proj.weight)], dim=0))
            block.mixer.proj.weight.copy_(a.o_proj.weight)
            block.norm1.weight.copy_(layer.input_layernorm.weight)
            block.norm2.weight.copy_(layer.post_attention_layernorm.weight)
            block.mlp.w_gate.copy_(layer.mlp.gate_proj.weight.T)
            block.mlp.w_up.copy_(layer.mlp.up_proj.weight.T)
            block.mlp.w_down.copy_(layer.mlp.down_proj.weight.T)
    model = model.to(src.embed_tokens.weight.device)
    _verify(llama, model)
    return model


def _verify(llama, model: CausalLM, tokens: int = 24) -> None:
    """The conversion computes the source's logits on a probe sequence, or it is refused: a Llama-family
    model with a change this converter does not know (a norm offset, scaled embeddings, …) must not
    convert silently into another function."""
    ids = torch.randint(0, model.cfg.vocab_size, (1, min(tokens, model.cfg.max_seq_len)),
                        generator=torch.Generator().manual_seed(0)).to(model.embed.weight.device)
    with torch.no_grad():
        ref = llama(ids).logits.float()
        got = model(ids)[0].float()
    err = (got - ref).abs().max().item()
    if not err <= 1e-3 * max(1.0, ref.abs().max().item()):
        raise ValueError(f"{type(llama).__name__} does not convert exactly: the converted model's logits differ "
                         f"from the source's by up to {err:.3g} on a probe sequence")


def stack_llama(llama, levels: list, init: str = "split", variant: str | None = None) -> NestlearnForCausalLM:
    """Hope-Attention from a Llama by ad-hoc level stacking (§7.3): attention, norms and embeddings kept,
    every MLP a CMS whose levels start from it (``nestlearn.models.stacking``: ``"split"`` deals its hidden
    units out to the levels, ``"copy"`` copies it into each, ``"zero"`` is D8). ``levels``: one list of
    ``LevelConfig`` for every layer, or one list per layer (per-layer frequencies). At learning rate 0 the
    logits equal the Llama's."""
    if levels and isinstance(levels[0], LevelConfig) and not all(isinstance(lv, LevelConfig) for lv in levels):
        raise ValueError("levels must be LevelConfigs, or one list of LevelConfigs per layer")
    return from_nestlearn(stack_levels(llama_to_nestlearn(llama), levels, variant=variant, init=init))


__all__ = ["llama_to_nestlearn", "stack_llama"]
