"""Hugging Face ``transformers`` integration (the ``hf`` extra: ``pip install "nestlearn[hf]"``).

    import nestlearn.hf
    model = AutoModelForCausalLM.from_pretrained("path/to/saved")     # any block kind
    out = model.generate(ids, max_new_tokens=20)                       # the memory state is the cache

Importing this package registers ``model_type = "nestlearn"`` with ``AutoConfig`` and
``AutoModelForCausalLM``. ``convert.py`` moves models between nestlearn run folders and ``transformers``
folders; ``llama.py`` turns a ``transformers`` Llama into Hope-Attention by ad-hoc level stacking (§7.3).
"""

from __future__ import annotations

try:
    import transformers  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('nestlearn.hf needs transformers: pip install "nestlearn[hf]"') from e

from transformers import AutoConfig, AutoModelForCausalLM

from .convert import export_run, from_run, tokenizer_for
from .llama import llama_to_nestlearn, stack_llama
from .modeling import MemoryCache, NestlearnConfig, NestlearnForCausalLM, from_nestlearn

AutoConfig.register(NestlearnConfig.model_type, NestlearnConfig, exist_ok=True)
AutoModelForCausalLM.register(NestlearnConfig, NestlearnForCausalLM, exist_ok=True)

__all__ = ["MemoryCache", "NestlearnConfig", "NestlearnForCausalLM", "export_run", "from_nestlearn", "from_run",
           "llama_to_nestlearn", "stack_llama", "tokenizer_for"]
