"""nestlearn models as ``transformers`` models: a config, a ``PreTrainedModel`` + ``GenerationMixin``
wrapping any ``CausalLM`` block kind, and the in-context memory state as ``generate``'s cache.

    import nestlearn.hf  # registers model_type "nestlearn" with AutoConfig / AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path)
    out = model.generate(ids, max_new_tokens=20, do_sample=False)

The cache (``MemoryCache``) holds the model's whole ``ModelState``: attention caches, fast weights,
what the CMS levels learned. ``model(ids, cache=c)`` continues exactly where the call that returned
``c`` left off, inside ``generate`` and across calls; ``save_state`` / ``load_state`` keep it on disk.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.utils import _pytree as pytree
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..models import CausalLM, ModelConfig, ModelState, from_dict, to_dict
from ..models.state import cross_entropy


class NestlearnConfig(PretrainedConfig):
    """A ``transformers`` config holding a nestlearn ``ModelConfig`` (``model``, as a dict) and the usual
    top-level names that tools read (``hidden_size``, ``num_hidden_layers``, …), derived from it."""

    model_type = "nestlearn"

    def __init__(self, model: dict | None = None, use_cache: bool = True, **kwargs):
        cfg = from_dict(model or {})
        self.use_cache = use_cache
        cfg.validate()
        self.model = to_dict(cfg)
        kwargs.setdefault("tie_word_embeddings", cfg.tie_embeddings)
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "max_position_embeddings"):
            kwargs.pop(key, None)  # derived, never set separately
        super().__init__(**kwargs)
        self.vocab_size, self.hidden_size, self.num_hidden_layers = cfg.vocab_size, cfg.dim, cfg.layers
        self.num_attention_heads, self.max_position_embeddings = cfg.heads, cfg.max_seq_len

    @property
    def nestlearn(self) -> ModelConfig:
        return from_dict(self.model)


class MemoryCache:
    """``generate``'s cache for a nestlearn model: the model's ``ModelState`` after the tokens it has read.

    Not a ``transformers.Cache``: there is nothing to crop or slice, and every token's effect on the
    memories is in it. ``reorder_cache`` picks batch rows (beam search)."""

    is_linear = (True,)  # generate passes the new tokens only; it never re-slices a prompt against it
    is_compileable = False
    is_croppable = False

    def __init__(self, state: ModelState):
        self.state = state

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.state.pos + self.state.pending.shape[1]

    def reorder_cache(self, beam_idx: Tensor) -> None:
        rows = self.state.pending.shape[0]

        def pick(t):
            if not isinstance(t, Tensor):
                return t
            if t.dim() == 0 or t.shape[0] != rows:
                raise ValueError(f"a state tensor of shape {list(t.shape)} has no batch dimension of {rows}")
            return t.index_select(0, beam_idx.to(t.device))

        self.state = pytree.tree_map(pick, self.state)


REMOTE_CODE = (
    '"""A nestlearn model (pip install "nestlearn[hf]"): the classes come from the installed package."""\n'
    "from nestlearn.hf import NestlearnConfig, NestlearnForCausalLM  # noqa: F401\n"
)


class NestlearnForCausalLM(PreTrainedModel, GenerationMixin):
    """Any nestlearn block kind as a ``transformers`` causal LM; ``self.model`` is the ``CausalLM``.

    ``forward(input_ids, cache=None, labels=None)``: labels follow the ``transformers`` convention (the
    model shifts them). Every token is read (no padding masks: an ``attention_mask`` with a zero is an
    error); rows of a batch are independent, so right padding is harmless to the real tokens' logits.
    """

    config_class = NestlearnConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _is_stateful = True
    _no_split_modules = ["Block"]
    _supports_cache_class = False
    supports_gradient_checkpointing = True  # CausalLM.gradient_checkpointing: activation_checkpointing()

    def __init__(self, config: NestlearnConfig, model: CausalLM | None = None):
        super().__init__(config)
        self.model = model if model is not None else CausalLM(config.nestlearn)
        self._tied_weights_keys = {"model.head.weight": "model.embed.weight"} if config.tie_word_embeddings else {}
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, plus a one-line ``nestlearn_hf.py`` and the config's
        ``auto_map`` naming it, so that tools which cannot import ``nestlearn.hf`` first (lm-eval's command
        line, ``pipeline``) load the folder with ``trust_remote_code=True``: the code it runs is the
        installed nestlearn's."""
        self.config.auto_map = {"AutoConfig": "nestlearn_hf.NestlearnConfig",
                                "AutoModelForCausalLM": "nestlearn_hf.NestlearnForCausalLM"}
        super().save_pretrained(save_directory, *args, **kwargs)
        Path(save_directory, "nestlearn_hf.py").write_text(REMOTE_CODE)

    def _init_weights(self, module) -> None:
        """nestlearn's modules initialise themselves; ``from_pretrained`` loads every parameter."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the cache is the model's own state (MemoryCache)

    def get_input_embeddings(self):
        return self.model.embed

    def set_input_embeddings(self, value) -> None:
        self.model.embed = value

    def get_output_embeddings(self):
        return self.model.head

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                cache: MemoryCache | None = None, labels: Tensor | None = None, use_cache: bool | None = None,
                return_dict: bool | None = None, logits_to_keep: int = 0, **kwargs) -> CausalLMOutputWithPast:
        if input_ids is None:
            raise ValueError("nestlearn models read token ids: pass input_ids (inputs_embeds is not supported)")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("nestlearn models read every token of a row: an attention_mask with zeros (padding) "
                             "is not supported; pass rows of equal length, or one row at a time")
        if cache is not None and not isinstance(cache, MemoryCache):
            raise ValueError(f"cache must be the MemoryCache a nestlearn model returned (got {type(cache).__name__})")
        logits, _, state = self.model(input_ids, state=None if cache is None else cache.state)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits[:, :-1], labels[:, 1:].to(logits.device), reduction="mean")
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return CausalLMOutputWithPast(loss=loss, logits=logits.float(), cache=MemoryCache(state) if use_cache else None)

    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, cache=None, attention_mask=None,
                                      is_first_iteration=False, **kwargs):
        # the cache has read everything but the newest tokens: with a cache, only those are fed
        if cache is not None and next_sequence_length is not None:
            input_ids = input_ids[:, -next_sequence_length:]
        return {"input_ids": input_ids, "cache": cache, "use_cache": kwargs.get("use_cache", True)}

    # ---- the in-context memory on disk (nestlearn's safetensors state file) ---------------------
    def save_state(self, cache: MemoryCache, path: str | Path) -> None:
        """Write what the model holds after a call (``out.cache``) to ``path`` (atomic)."""
        self.model.save_state(cache.state, path)

    def load_state(self, path: str | Path) -> MemoryCache:
        """A cache read from ``save_state``'s file: pass it as ``cache=`` to continue where it was saved."""
        return MemoryCache(self.model.load_state(path))

    def next_document(self, cache: MemoryCache) -> MemoryCache:
        """The cache for a new document: positions, attention caches and mixers start afresh; CMS levels
        with ``reset: persistent`` keep what they learned (``CausalLM.new_sequence_state``)."""
        return MemoryCache(self.model.new_sequence_state(cache.state))


def from_nestlearn(model: CausalLM) -> NestlearnForCausalLM:
    """Wrap a nestlearn ``CausalLM`` (its parameters are shared, not copied)."""
    return NestlearnForCausalLM(NestlearnConfig(model=to_dict(model.cfg)), model=model)


__all__ = ["MemoryCache", "NestlearnConfig", "NestlearnForCausalLM", "from_nestlearn"]
