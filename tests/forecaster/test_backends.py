"""Inference backends on the tiny model: the engine against the transformers reference, adapters
served from one base, fallbacks, and the OpenAI-compatible server backend against a local server."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pytest

from advisor.config import InferenceSettings
from advisor.data.store import SqlMarketStore
from advisor.forecaster import backends
from advisor.forecaster.backends.fast import EngineBackend
from advisor.forecaster.backends.hf import TransformersBackend
from advisor.forecaster.backends.server import InferenceServerError, ServerBackend, cut_at_stop, served_name
from advisor.forecaster.generation import Decoding, generate
from advisor.forecaster.loading import ModelSpec, attach_adapter, load_model
from advisor.forecaster.prompts import PromptConfig
from advisor.forecaster.service import build_prompts, build_windows
from tests.fakes.openai_server import FakeOpenAI

GREEDY = Decoding(max_new_tokens=16)
SAMPLED = Decoding(mode="sample", num_candidates=3, max_new_tokens=12, seed=5)


@pytest.fixture(autouse=True)
def _default_inference_settings():
    backends.configure(InferenceSettings())
    yield
    backends.configure(InferenceSettings())


@pytest.fixture
def handle(tiny_model_dir: Path, tmp_path: Path):
    return load_model(ModelSpec(base=str(tiny_model_dir), dtype="float32"), tmp_path)


@pytest.fixture
def prompts(market, handle):
    with market() as session:
        windows = build_windows(SqlMarketStore(session), ["AAA", "BBB", "CCC"], date(2014, 5, 9))
        windows += build_windows(SqlMarketStore(session), ["AAA", "BBB"], date(2014, 6, 6))
    return build_prompts(windows, handle, PromptConfig(), GREEDY)


def _texts(handle, prompts, decoding, backend):
    out = generate(handle, [p.text for p in prompts], [p.hash for p in prompts], decoding, progress=False, backend=backend)
    return [[g.text for g in row] for row in out], out


def _random_adapter(tiny_model_dir: Path, out: Path, seed: int, **lora_kwargs) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"], init_lora_weights=False, **lora_kwargs)
    peft_model = get_peft_model(model, config)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.5)  # large enough to change greedy choices
    peft_model.save_pretrained(out)
    return out


def test_auto_picks_the_engine_for_a_llama_model(handle) -> None:
    assert isinstance(backends.select_backend(handle), EngineBackend)
    assert isinstance(backends.select_backend(handle, "transformers"), TransformersBackend)
    with pytest.raises(Exception, match="unknown inference backend"):
        backends.select_backend(handle, "vllm-direct")


def test_engine_greedy_views_equal_the_transformers_reference(handle, prompts) -> None:
    engine, engine_rows = _texts(handle, prompts, GREEDY, "engine")
    reference, reference_rows = _texts(handle, prompts, GREEDY, "transformers")
    assert engine == reference
    assert [r[0].stop_reason for r in engine_rows] == [r[0].stop_reason for r in reference_rows]
    assert [r[0].new_tokens for r in engine_rows] == [r[0].new_tokens for r in reference_rows]
    assert {r[0].backend for r in engine_rows} == {"engine"}


@pytest.fixture
def grounded(market, handle):
    """Prompts and their groundings (the product's default decoding), with room for whole answers."""
    from advisor.forecaster.grounding import grounding_for
    from advisor.forecaster.sentiment import SentimentScorer

    with market() as session:
        windows = build_windows(SqlMarketStore(session), ["AAA", "BBB", "CCC"], date(2014, 5, 9))
    decoding = Decoding(max_new_tokens=120)
    built = build_prompts(windows, handle, PromptConfig(), decoding)
    groundings = [grounding_for(w, SentimentScorer(None), p.text_item_ids, PromptConfig().max_text_chars) for w, p in zip(windows, built, strict=True)]
    return built, groundings, decoding


def test_a_ragged_step_equals_feeding_the_tokens_one_at_a_time(handle) -> None:
    """Rows bringing 3, 1 and 5 tokens in one pass give the logits and the cache of one token per pass."""
    import torch

    from advisor.forecaster.backends.fast import engine_for

    engine = engine_for(handle.base)
    layers = engine._weights_for(None)
    prompts = [[5, 17, 230, 11], [7, 8, 9], [400, 401, 402, 403, 404, 405]]
    chunks = [[31, 32, 33], [44], [51, 52, 53, 54, 55]]

    def fresh() -> tuple[list, list]:
        shape = (3, engine.n_kv, 32, engine.head_dim)
        return [torch.zeros(shape) for _ in engine.layers], [torch.zeros(shape) for _ in engine.layers]

    with torch.inference_mode():
        ragged, stepwise = fresh(), fresh()
        for cache in (ragged, stepwise):
            for row, ids in enumerate(prompts):
                engine._forward(torch.tensor([ids]), torch.arange(len(ids))[None], cache, slice(row, row + 1), len(ids), layers)
        together = engine._forward_chunks(chunks, [len(p) for p in prompts], ragged, layers)
        last = []
        for row, (ids, chunk) in enumerate(zip(prompts, chunks, strict=True)):
            for j, token in enumerate(chunk):
                at = len(ids) + j
                logits = engine._forward(torch.tensor([[token]]), torch.tensor([[at]]), stepwise, slice(row, row + 1), at + 1, layers)
            last.append(logits[0])
    torch.testing.assert_close(together, torch.stack(last), rtol=1e-4, atol=1e-4)
    for a, b in zip(ragged[0] + ragged[1], stepwise[0] + stepwise[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_grounded_engine_views_equal_the_reference_with_fewer_model_passes(handle, grounded, monkeypatch) -> None:
    """Under grounding the engine appends forced tokens without asking the model; the views stay the
    transformers reference's, token for token, and the model runs far fewer decode passes than tokens."""
    from advisor.forecaster.engine import DecoderEngine

    built, groundings, decoding = grounded
    passes = []
    real = DecoderEngine._forward_chunks
    monkeypatch.setattr(DecoderEngine, "_forward_chunks", lambda self, chunks, *a: passes.append(sum(map(len, chunks))) or real(self, chunks, *a))
    texts, hashes = [p.text for p in built], [p.hash for p in built]
    engine = generate(handle, texts, hashes, decoding, progress=False, backend="engine", groundings=groundings)
    reference = generate(handle, texts, hashes, decoding, progress=False, backend="transformers", groundings=groundings)
    assert [r[0].text for r in engine] == [r[0].text for r in reference]
    assert [r[0].stop_reason for r in engine] == [r[0].stop_reason for r in reference]
    assert all(r[0].text.startswith("[Positive Developments]\n1.") for r in engine)
    longest = max(r[0].new_tokens for r in engine)
    assert len(passes) < longest and max(passes) > len(built), f"{len(passes)} passes ({passes}) for views of up to {longest} tokens"
    sampled = Decoding(mode="sample", num_candidates=3, max_new_tokens=120, seed=5)
    together = generate(handle, texts, hashes, sampled, progress=False, backend="engine", groundings=groundings)
    alone = generate(handle, texts[1:2], hashes[1:2], sampled, progress=False, backend="engine", groundings=groundings[1:2])
    assert [g.text for g in together[1]] == [g.text for g in alone[0]], "a prompt's grounded candidates do not depend on the batch"


def test_engine_candidates_are_reproducible_per_prompt_and_differ(handle, prompts) -> None:
    together, rows = _texts(handle, prompts, SAMPLED, "engine")
    alone, _ = _texts(handle, prompts[2:3], SAMPLED, "engine")
    assert together[2] == alone[0], "a prompt's candidates do not depend on what else was sampled"
    assert len(set(together[0])) > 1, "candidates of one prompt differ"
    assert len({g.seed for g in rows[0]}) == 1 and [g.candidate_index for g in rows[0]] == [0, 1, 2]
    again, _ = _texts(handle, prompts, SAMPLED, "engine")
    assert again == together


def test_engine_serves_several_adapters_from_one_base(tiny_model_dir, tmp_path, handle, prompts) -> None:
    first = attach_adapter(handle.base, _random_adapter(tiny_model_dir, tmp_path / "a1", seed=1))
    second = attach_adapter(handle.base, _random_adapter(tiny_model_dir, tmp_path / "a2", seed=2))
    assert first.base is second.base is handle.base
    views = {}
    for name, h in (("first", first), ("second", second), ("base", handle), ("first again", first)):
        engine, _ = _texts(h, prompts, GREEDY, "engine")
        reference, _ = _texts(h, prompts, GREEDY, "transformers")
        assert engine == reference, name
        views[name] = engine
    assert views["first"] != views["second"] != views["base"]
    assert views["first again"] == views["first"]


def test_a_model_the_engine_does_not_implement_falls_back_with_a_note(tmp_path, tiny_model_dir, caplog) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=2048))
    path = tmp_path / "tiny-gpt2"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    gpt2 = load_model(ModelSpec(base=str(path), dtype="float32"), tmp_path)
    with caplog.at_level(logging.WARNING, logger="advisor.inference"):
        chosen = backends.select_backend(gpt2, "engine")
    assert isinstance(chosen, TransformersBackend)
    assert "falling back to the transformers backend" in caplog.text and "gpt2" in caplog.text


def test_an_adapter_that_trains_other_modules_is_left_to_transformers(tiny_model_dir, tmp_path, handle) -> None:
    adapter = _random_adapter(tiny_model_dir, tmp_path / "saves-head", seed=3, modules_to_save=["lm_head"])
    tuned = attach_adapter(handle.base, adapter)
    assert isinstance(backends.select_backend(tuned), TransformersBackend)


# ---------------------------------------------------------------- OpenAI-compatible server


def _server_settings(url: str, **kwargs) -> InferenceSettings:
    return InferenceSettings(**({"backend": "openai", "server_url": url, "server_retries": 3, "server_timeout_s": 2.0} | kwargs))


def _engine_completion(handle, prompts):
    """A server whose completions are the engine's own output for the same prompt."""
    by_text = {p.text: p for p in prompts}

    def complete(body):
        prompt = by_text[body["prompt"]]
        decoding = GREEDY if body["temperature"] == 0 else Decoding(mode="sample", num_candidates=body["n"], max_new_tokens=body["max_tokens"])
        out = generate(handle, [prompt.text], [prompt.hash], decoding, progress=False, backend="engine")
        return [g.text for g in out[0]]

    return complete


def test_server_backend_gives_the_same_views_and_names_the_adapter(tiny_model_dir, tmp_path, handle, prompts) -> None:
    tuned = attach_adapter(handle.base, _random_adapter(tiny_model_dir, tmp_path / "a1", seed=1))
    name = served_name(tuned, InferenceSettings())
    assert name == f"advisor-{tuned.adapter_hash[:16]}"
    with FakeOpenAI(_engine_completion(tuned, prompts), models={name, "tiny-llama"}) as server:
        backends.configure(_server_settings(server.url))
        remote, rows = _texts(tuned, prompts, GREEDY, None)
        local, _ = _texts(tuned, prompts, GREEDY, "engine")
        assert remote == local and {r[0].backend for r in rows} == {"openai"}
        assert {r["model"] for r in server.requests} == {name}
        assert all(r["temperature"] == 0.0 and r["max_tokens"] == GREEDY.max_new_tokens for r in server.requests)
        server.requests.clear()
        sampled, _ = _texts(handle, prompts[:2], SAMPLED, None)
        assert [len(c) for c in sampled] == [3, 3]
        assert {r["model"] for r in server.requests} == {"tiny-llama"} and {r["n"] for r in server.requests} == {3}


def test_server_backend_retries_temporary_failures(handle, prompts) -> None:
    with FakeOpenAI(lambda body: ["[Prediction & Analysis]\nPrediction: Up by 1-2%\nAnalysis: ok"]) as server:
        server.add_fault("status", times=1, status=503)
        server.add_fault("status", times=1, status=429)
        server.add_fault("reset", times=1)
        backends.configure(_server_settings(server.url, server_retries=4, server_concurrency=1))
        texts, rows = _texts(handle, prompts[:1], GREEDY, None)
        assert texts == [["[Prediction & Analysis]\nPrediction: Up by 1-2%\nAnalysis: ok"]]
        assert len(server.requests) == 4


def test_server_backend_times_out_and_retries(handle, prompts) -> None:
    with FakeOpenAI(lambda body: ["Prediction: Down by 0-1%"]) as server:
        server.add_fault("delay", times=1, delay_s=1.5)
        backends.configure(_server_settings(server.url, server_timeout_s=0.5, server_concurrency=1))
        texts, _ = _texts(handle, prompts[:1], GREEDY, None)
        assert texts == [["Prediction: Down by 0-1%"]] and len(server.requests) == 2


def test_a_server_that_is_down_is_a_clear_error(handle, prompts) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backends.configure(_server_settings(f"http://127.0.0.1:{port}/v1", server_retries=2))
    with pytest.raises(InferenceServerError, match=rf"127.0.0.1:{port}/v1 did not answer after 2 attempt\(s\).*--backend engine"):
        _texts(handle, prompts[:1], GREEDY, None)


def test_unknown_model_and_garbage_answers_are_clear_errors(handle, prompts) -> None:
    with FakeOpenAI(lambda body: ["x"], models={"something-else"}) as server:
        backends.configure(_server_settings(server.url))
        with pytest.raises(InferenceServerError, match="does not serve model 'tiny-llama'.*--lora-modules"):
            _texts(handle, prompts[:1], GREEDY, None)
    with FakeOpenAI(lambda body: ["x"]) as server:
        server.add_fault("garbage", times=5)
        backends.configure(_server_settings(server.url))
        with pytest.raises(InferenceServerError, match="not an OpenAI completions response"):
            _texts(handle, prompts[:1], GREEDY, None)


def test_server_text_is_cut_by_the_same_early_stop_rules() -> None:
    text = "[Prediction & Analysis]\nPrediction: Up by 1-2%\nAnalysis: steady.\nMore chatter\nand more"
    cut, reason = cut_at_stop(text)
    assert cut.strip().endswith("Analysis: steady.") and reason == "answer_complete"
    looping = "a line\n" * 5
    assert cut_at_stop(looping)[1] == "repetition"
    assert cut_at_stop("no newline at all") == ("no newline at all", None)


def test_the_server_backend_never_prints_its_key(monkeypatch, handle, prompts) -> None:
    monkeypatch.setenv("ADVISOR_INFERENCE_API_KEY", "sk-very-secret")
    backend = ServerBackend(_server_settings("http://127.0.0.1:9/v1", server_retries=1))
    assert "sk-very-secret" not in repr(backend.__dict__.get("settings"))
    with pytest.raises(InferenceServerError) as error:
        backend.generate(handle, [backends.PromptJob(prompts[0].text, prompts[0].hash, 0)], GREEDY, lambda i: None)
    assert "sk-very-secret" not in str(error.value)


def test_engine_reads_rslora_and_per_module_alphas_as_peft_does(tiny_model_dir, tmp_path, handle, prompts) -> None:
    """The engine takes factors and scales from the adapter's files, not from peft: the scale rules
    peft applies (rsLoRA's alpha / sqrt(r), per-module alphas) must come out the same."""
    adapter = _random_adapter(tiny_model_dir, tmp_path / "rs", seed=4, use_rslora=True, alpha_pattern={"down_proj": 2})
    tuned = attach_adapter(handle.base, adapter)
    engine, _ = _texts(tuned, prompts, GREEDY, "engine")
    reference, _ = _texts(tuned, prompts, GREEDY, "transformers")
    assert engine == reference


def test_the_engine_path_never_imports_peft(tiny_model_dir, tmp_path) -> None:
    """Attaching an adapter and generating with the engine leaves peft unimported (it cost ~3 s of
    every ``advisor forecast``); the transformers path then loads it on first use."""
    import subprocess
    import sys
    import textwrap

    adapter = _random_adapter(tiny_model_dir, tmp_path / "a1", seed=1)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from advisor.forecaster.generation import Decoding, generate
        from advisor.forecaster.loading import ModelSpec, load_model
        handle = load_model(ModelSpec(base={str(tiny_model_dir)!r}, adapter=Path({str(adapter)!r}), dtype="float32"), Path({str(tmp_path)!r}))
        text = handle.tokenizer.apply_chat_template([{{"role": "user", "content": "hi"}}], tokenize=False, add_generation_prompt=True)
        generate(handle, [text], ["h"], Decoding(max_new_tokens=4), progress=False, backend="engine")
        print("peft after engine:", "peft" in sys.modules)
        generate(handle, [text], ["h"], Decoding(max_new_tokens=4), progress=False, backend="transformers")
        print("peft after transformers:", "peft" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "peft after engine: False" in out and "peft after transformers: True" in out


def test_an_adapter_with_unreadable_weights_is_refused_clearly(tiny_model_dir, tmp_path, handle) -> None:
    from advisor.forecaster.loading import AdapterMismatchError

    adapter = _random_adapter(tiny_model_dir, tmp_path / "broken", seed=1)
    (adapter / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(AdapterMismatchError, match="unreadable"):
        attach_adapter(handle.base, adapter)
    assert not handle.base.adapters
