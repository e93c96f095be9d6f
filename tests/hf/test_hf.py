"""The Hugging Face integration (nestlearn.hf): Auto classes, generate with the memory state as its cache,
save/load of weights and of the state, nestlearn run folders, Llama conversion and ad-hoc level stacking,
and lm-eval's HF wrapper."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed (pip install 'nestlearn[hf]')")

from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

import nestlearn.hf as nh  # noqa: E402
from nestlearn.data.tokenizer import ByteTokenizer  # noqa: E402
from nestlearn.layers import LevelConfig  # noqa: E402
from nestlearn.models import BLOCKS, CausalLM, preset  # noqa: E402


def hf_model(block: str, seed: int = 0, **overrides) -> nh.NestlearnForCausalLM:
    torch.manual_seed(seed)
    return nh.from_nestlearn(CausalLM(preset("debug", block=block, **overrides)).eval())


def ids(B: int = 2, T: int = 21, vocab: int = 256, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_auto_round_trip_every_block_kind(block, tmp_path):
    model = hf_model(block)
    x = ids()
    with torch.no_grad():
        before = model(x).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model["block"] == block
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is nh.NestlearnForCausalLM
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, before)


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_generate_equals_the_library_greedy_decoding(block):
    model = hf_model(block)
    prompt = ids(1, 13)
    out = model.generate(prompt, max_new_tokens=10, do_sample=False)
    own, _ = model.model.generate(prompt, 10, temperature=0)
    assert torch.equal(out, own)


def test_generate_continues_from_a_cache_exactly():
    """A document read in one call, then generate on the next piece with its cache, equals generate on the
    whole text: the cache carries the attention cache and what the CMS levels learned."""
    model = hf_model("hope")
    x = ids(1, 30)
    with torch.no_grad():
        cache = model(x[:, :17]).cache
    assert cache.get_seq_length() == 17
    cont = model.generate(x[:, 17:], cache=cache, max_new_tokens=9, do_sample=False)
    whole = model.generate(x, max_new_tokens=9, do_sample=False)
    assert torch.equal(cont[:, -9:], whole[:, -9:])
    assert cache.get_seq_length() == 17  # the caller's cache is not changed by generate


def test_sampling_matches_the_library_sampler():
    model = hf_model("hope_attention")
    prompt = ids(1, 9)
    torch.manual_seed(123)
    out = model.generate(prompt, max_new_tokens=8, do_sample=True, temperature=0.8, top_k=20, top_p=1.0)
    torch.manual_seed(123)
    own, _ = model.model.generate(prompt, 8, temperature=0.8, top_k=20)
    assert torch.equal(out, own)


def test_beam_search_scores_are_the_sequences_log_probabilities():
    """Beam search reorders the memory state with the beams: each returned beam's score equals its
    log-probability computed afresh by one forward (a wrong reorder would mix states across beams)."""
    model = hf_model("hope")
    prompt = ids(1, 11)
    out = model.generate(prompt, max_new_tokens=6, num_beams=3, num_return_sequences=3, do_sample=False,
                         length_penalty=0.0, early_stopping=True, output_scores=True, return_dict_in_generate=True)
    assert out.sequences.shape == (3, 17)
    with torch.no_grad():
        logp = torch.log_softmax(model(out.sequences).logits.double(), -1)
    fresh = logp[:, 10:-1].gather(-1, out.sequences[:, 11:, None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(out.sequences_scores.double(), fresh, rtol=0, atol=1e-4)
    assert len({tuple(s.tolist()) for s in out.sequences}) == 3


def test_labels_follow_the_transformers_convention():
    model = hf_model("transformer")
    x = ids()
    with torch.no_grad():
        logits, loss, _ = model.model(x[:, :-1], targets=x[:, 1:])
        out = model(x, labels=x)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1),
                                                                           x[:, 1:].flatten()))
    torch.testing.assert_close(out.logits[:, :-1], logits)


def test_padding_masks_and_foreign_caches_are_refused():
    model = hf_model("hope")
    x = ids()
    mask = torch.ones_like(x)
    mask[0, :3] = 0
    with pytest.raises(ValueError, match="attention_mask with zeros"):
        model(x, attention_mask=mask)
    with pytest.raises(ValueError, match="MemoryCache"):
        model(x, cache=transformers.DynamicCache())
    assert model(x, attention_mask=torch.ones_like(x)).logits.shape == (2, 21, 256)


def test_the_memory_state_persists_across_processes(tmp_path):
    """save_state through the HF model, a fresh model from disk, load_state: the next document continues
    exactly as in one process."""
    model = hf_model("hope")
    model.save_pretrained(tmp_path / "model")
    x = ids(1, 40)
    with torch.no_grad():
        first = model(x[:, :23])
        model.save_state(first.cache, tmp_path / "memory.safetensors")
        expected = model(x[:, 23:], cache=first.cache).logits
        fresh = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
        cache = fresh.load_state(tmp_path / "memory.safetensors")
        assert cache.get_seq_length() == 23
        torch.testing.assert_close(fresh(x[:, 23:], cache=cache).logits, expected, rtol=0, atol=1e-6)


def test_tokenizer_gives_nestlearn_ids(tmp_path):
    tok = nh.tokenizer_for(ByteTokenizer())
    text = "héllo, wörld\n\ttabs"
    assert tok(text).input_ids == ByteTokenizer().encode(text)
    assert tok.decode(tok(text).input_ids) == text
    tok.save_pretrained(tmp_path)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path)(text).input_ids == list(text.encode())


def test_nestlearn_run_folders_convert_both_ways(tmp_path):
    from nestlearn.train import load_config, train

    corpus = tmp_path / "text.txt"
    corpus.write_text("the cat sat on the mat. " * 2000)
    cfg = load_config("configs/debug.yaml", [f"train.out_dir={tmp_path / 'run'}", "train.steps=3", "train.eval_every=3",
                                             "train.ckpt_every=3", "train.progress=false", "data.source=text",
                                             f"data.train={corpus}", "data.seq_len=32", "model.block=hope"])
    trainer = train(cfg)
    model, tok = nh.from_run(tmp_path / "run")
    assert tok is not None and tok("cat").input_ids == [99, 97, 116]
    x = ids(2, 32)
    with torch.no_grad():
        ref = trainer.model.eval()(x)[0]
        torch.testing.assert_close(model(x).logits, ref, rtol=0, atol=0)
    nh.export_run(model, tmp_path / "back", tok)
    again, tok2 = nh.from_run(tmp_path / "back")
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, ref, rtol=0, atol=0)
    assert tok2("cat").input_ids == [99, 97, 116]
    with pytest.raises(ValueError, match="not a nestlearn run folder"):
        nh.from_run(tmp_path)


# ---- Llama -------------------------------------------------------------------------------------------

def llama(kv_heads: int = 2, **kw) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=kv_heads, vocab_size=100, max_position_embeddings=256,
                      rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, **kw)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1, so that a dropped norm weight shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_llama_converts_exactly(kv_heads):
    src = llama(kv_heads)
    x = ids(2, 30, vocab=100)
    with torch.no_grad():
        ref = src(x).logits
        torch.testing.assert_close(nh.llama_to_nestlearn(src)(x)[0], ref, rtol=0, atol=2e-6)


def test_llama_that_cannot_convert_exactly_is_refused():
    src = llama(rope_scaling=None)
    src.config.rope_parameters = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}
    with pytest.raises(ValueError, match="rope_type='llama3'"):
        nh.llama_to_nestlearn(src)
    src.config.hidden_act = "gelu"
    with pytest.raises(ValueError, match="hidden_act='gelu'"):
        nh.llama_to_nestlearn(src)


def test_llama_family_mistral_with_a_sliding_window_and_qwen2_refused():
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=100, max_position_embeddings=256)
    torch.manual_seed(0)
    mistral = MistralForCausalLM(MistralConfig(sliding_window=8, **shape)).eval()
    x = ids(2, 30, vocab=100)
    converted = nh.llama_to_nestlearn(mistral)
    assert converted.cfg.window == 8
    with torch.no_grad():
        torch.testing.assert_close(converted(x)[0], mistral(x).logits, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match=r"biases on \['q_proj', 'k_proj', 'v_proj'\]"):
        nh.llama_to_nestlearn(Qwen2ForCausalLM(Qwen2Config(**shape)))


def test_a_conversion_that_would_not_be_exact_is_refused():
    src = llama()
    src.config.rms_norm_eps = 0.5  # the config no longer says what the modules compute
    with pytest.raises(ValueError, match="does not convert exactly"):
        nh.llama_to_nestlearn(src)


@pytest.mark.parametrize("init", ["split", "copy", "zero"])
def test_stacked_llama_equals_its_source_at_lr_0_and_learns_in_context(init):
    src = llama()
    x = ids(2, 40, vocab=100)
    with torch.no_grad():
        ref = src(x).logits
    per_layer = [[LevelConfig(4, 0.0), LevelConfig(8, 0.0)], [LevelConfig(8, 0.0), LevelConfig(16, 0.0)]]
    frozen = nh.stack_llama(src, per_layer, init=init)
    assert [lv.chunk_size for lv in frozen.model.blocks[1].mlp.cfg.levels] == [8, 16]  # per-layer frequencies
    with torch.no_grad():
        torch.testing.assert_close(frozen(x).logits, ref, rtol=0, atol=2e-6)
    learning = nh.stack_llama(src, [[LevelConfig(4, 0.05), LevelConfig(8, 0.01)],
                                    [LevelConfig(8, 0.05), LevelConfig(16, 0.01)]], init=init)
    with torch.no_grad():
        out = learning(x).logits
    # the first CMS step comes before token 4: positions 0–3 are the Llama's, every later one has moved
    torch.testing.assert_close(out[:, :4], ref[:, :4], rtol=0, atol=2e-6)
    assert ((out[:, 4:] - ref[:, 4:]).abs().amax(-1) > 1e-4).all()


def test_stacked_llama_learns_a_repeated_sequence_in_context():
    """A random sequence read twice: the stacked model's CMS levels take gradient steps on the first copy,
    so its next-token loss on the second copy falls below the Llama's. Split levels learn from the first
    segment on (about 0.33 nats lower at these settings, over 4 seeds); zero-initialised ones (D8) barely
    (about 0.09)."""
    src = llama()
    r = ids(8, 32, vocab=100, seed=3)
    x = torch.cat([r, r], 1)

    def repeat_loss(logits):
        return -torch.log_softmax(logits[:, 32:-1].double(), -1).gather(-1, x[:, 33:, None]).mean().item()

    levels = [LevelConfig(4, 0.1), LevelConfig(16, 0.025)]
    with torch.no_grad():
        base = repeat_loss(src(x).logits)
        split, zero = (repeat_loss(nh.stack_llama(src, levels, init=i)(x).logits) for i in ("split", "zero"))
    assert split < base - 0.2 and split < zero - 0.1, (base, split, zero)


def test_split_stacking_deals_the_mlp_out_to_every_level():
    src = llama()
    hope = nh.stack_llama(src, [LevelConfig(4, 0.0), LevelConfig(16, 0.0)], init="split")
    cms, mlp = hope.model.blocks[0].mlp, src.model.layers[0].mlp
    assert cms.cfg.variant == "independent"
    torch.testing.assert_close(cms.levels[1].w_gate, mlp.gate_proj.weight.T[:, 64:])
    assert sum(p.numel() for p in cms.levels.parameters()) == sum(p.numel() for p in mlp.parameters())
    with pytest.raises(ValueError, match="not divisible by 3"):
        nh.stack_llama(src, [LevelConfig(4, 0.0)] * 3, init="split")


# ---- lm-eval ---------------------------------------------------------------------------------------

def test_lm_eval_scores_a_saved_model(tmp_path):
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'nestlearn[eval]')")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model = hf_model("hope")
    tok = nh.tokenizer_for(ByteTokenizer())
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lm = HFLM(pretrained=str(tmp_path), tokenizer=str(tmp_path), batch_size=1, device="cpu", max_length=64)
    pairs = [("The cat sat on the", " mat"), ("The cat sat on the", " dog"), ("1 2 3", " 4")]
    scores = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)
    for (context, continuation), (logp, _) in zip(pairs, scores, strict=True):
        full = torch.tensor([list((context + continuation).encode())])
        n = len(context.encode())
        with torch.no_grad():
            lp = torch.log_softmax(model(full).logits[0].double(), -1)
        expected = sum(lp[i - 1, full[0, i]].item() for i in range(n, full.shape[1]))
        assert logp == pytest.approx(expected, abs=1e-3)
    text = lm.generate_until([Instance("generate_until", {}, ("The cat", {"until": ["\n"], "max_gen_toks": 5}), 0)],
                             disable_tqdm=True)
    assert isinstance(text[0], str)


def test_persistent_levels_carry_one_document_into_the_next():
    """With a persistent CMS level, next_document keeps what the level learned (the next document's logits
    differ from a fresh start) and restarts the rest (positions, attention caches)."""
    levels = [{"chunk_size": 4, "lr": 0.05, "reset": "persistent"}, {"chunk_size": 16, "lr": 0.01}]
    model = hf_model("hope_attention", **{"cms.levels": levels})
    doc1, doc2 = ids(1, 33, seed=2), ids(1, 20, seed=3)
    with torch.no_grad():
        carried = model.next_document(model(doc1).cache)
        assert carried.get_seq_length() == 0
        fresh = model(doc2).logits
        after = model(doc2, cache=carried).logits
    learned = carried.state.blocks[0].mlp.weights[0][0] - model.model.blocks[0].mlp.levels[0].w_gate
    assert learned.abs().max() > 1e-3  # level 0 moved in document 1 and kept it
    assert carried.state.blocks[0].mlp.weights[1][0].equal(model.model.blocks[0].mlp.levels[1].w_gate[None])
    assert (after - fresh).abs().amax(-1).min() > 1e-3  # every position of document 2 reads the moved level
    levels[0]["reset"] = "sequence"
    model = hf_model("hope_attention", **{"cms.levels": levels})
    with torch.no_grad():
        torch.testing.assert_close(model(doc2, cache=model.next_document(model(doc1).cache)).logits,
                                   model(doc2).logits, rtol=0, atol=0)


def test_transformers_trainer_fine_tunes_a_nestlearn_model(tmp_path):
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (pip install 'nestlearn[hf]')")
    model = hf_model("hope")
    seqs = ids(4, 24, seed=5)
    data = [{"input_ids": seqs[i % 4], "labels": seqs[i % 4]} for i in range(80)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=20, per_device_train_batch_size=4,
                                          learning_rate=1e-2, logging_steps=5, report_to=[], save_strategy="no",
                                          use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0] - 1.0, losses


@pytest.mark.parametrize("block", ["transformer", "hope"])
def test_activation_checkpointing_enable_recomputes_the_blocks_with_the_same_gradients(block):
    """transformers' activation checkpointing switch reaches the model (HOPE recomputes its in-context segments,
    the Transformer its blocks) and changes no gradient; off again, activations are kept."""
    model = hf_model(block).double().train()
    x = ids(2, 24, seed=3)
    grads = []
    for on in (False, True):
        if on:
            model.activation_checkpointing_enable()  # gradient_checkpointing_enable: its deprecated alias
        model(x, labels=x).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    inner = model.model  # a model whose CMS learns in context recomputes whole segments, any other its blocks
    assert inner.gradient_checkpointing
    assert inner.recompute_segments if inner.segment else all(b.recompute for b in inner.blocks)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-10, atol=1e-12, msg=name)
    model.activation_checkpointing_disable()
    assert not inner.gradient_checkpointing and not any(b.recompute for b in inner.blocks)


def test_a_saved_folder_loads_in_a_process_that_never_imported_nestlearn(tmp_path):
    """save_pretrained writes nestlearn_hf.py and the config's auto_map, so tools that cannot import
    nestlearn.hf first (lm-eval's command line) load the folder with trust_remote_code=True."""
    import subprocess
    import sys

    model = hf_model("hope")
    model.save_pretrained(tmp_path)
    x = ids(1, 20)
    with torch.no_grad():
        torch.save({"x": x, "logits": model(x).logits}, tmp_path / "ref.pt")
    code = ("import sys, torch\n"
            "from transformers import AutoModelForCausalLM\n"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
            "ref = torch.load(sys.argv[1] + '/ref.pt')\n"
            "assert torch.equal(m(ref['x']).logits, ref['logits']), 'logits differ'\n"
            "print(type(m).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "NestlearnForCausalLM"


def test_from_pretrained_in_bfloat16_generates(tmp_path):
    model = hf_model("hope")
    model.save_pretrained(tmp_path)
    half = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    out = half.generate(ids(1, 12), max_new_tokens=6, do_sample=False)
    own, _ = half.model.generate(ids(1, 12), 6, temperature=0)
    assert torch.equal(out, own)
