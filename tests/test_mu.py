"""MU: shapes, causality, fused = literal, ablations and the transformer baseline, sizes and FLOPs, tokenizer,
sampling, train -> save -> load -> generate, resume, and the torch-free `--set` machinery."""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="MU needs the nn extra (pip install torch==2.13.0 && pip install -e '.[nn]')")

from conftest import kill_after_first_epoch  # noqa: E402
from mu import MU, MUConfig  # noqa: E402
from mu.generate import apply_repetition_penalty, generate, sample_token  # noqa: E402
from mu.model import build_model, parameter_counts, tile_index, training_flops_per_token  # noqa: E402
from mu.tokenizer import train_tokenizer  # noqa: E402

TINY = {"vocab_size": 97, "n_layers": 2, "max_seq_len": 16}
CORPUS = "\n".join(
    f"The quick brown fox {i} jumps over the lazy dog. Once upon a time there were {i % 7} little pigs." for i in range(60)
)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One intra-op thread here and in the training subprocesses: on a shared 2-core machine, two
    OpenMP threads of tiny ops wait on each other (a tiny step measured 150 ms with two, 25 ms with one)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pair_of_models(**config) -> tuple[MU, MU]:
    """A literal and a fused model computing the same function."""
    torch.manual_seed(0)
    literal = MU(MUConfig(**TINY, block_attention="literal", **config)).eval()
    fused = MU(MUConfig(**TINY, block_attention="fused", **config)).eval()
    shared = {k: v for k, v in literal.state_dict().items() if ".blocks." not in k}
    fused.load_state_dict(shared, strict=False)
    for lit_layer, fused_layer in zip(literal.layers, fused.layers):
        fused_layer.blocks.copy_from(lit_layer.blocks)
    return literal, fused


def test_shapes_and_grid():
    model = MU(MUConfig(**TINY))
    idx = torch.randint(0, 97, (3, 16))
    assert model(idx).shape == (3, 16, 97)
    hidden = model.hidden(idx)
    assert model.to_grid(hidden).shape == (3, 16, 8, 8)
    assert sorted(tile_index().flatten().tolist()) == list(range(64))
    assert tile_index()[1].tolist() == [2, 3, 10, 11]  # block S: rows 0-1, columns 2-3 of the grid


def test_parameter_count_matches_design():
    model = MU(MUConfig(vocab_size=50_000, n_layers=6, max_seq_len=128))
    # The design states 11,574,160; the difference, 256 per layer, is the reference's 16x16
    # `block_interaction` matrix, which it creates but never uses.
    assert model.num_parameters() == 11_574_160 - 6 * 256


@pytest.mark.parametrize("kind", ["fused", "literal"])
def test_causal(kind):
    torch.manual_seed(0)
    model = MU(MUConfig(**TINY, block_attention=kind)).eval()
    idx = torch.randint(0, 97, (2, 16))
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 97
    a, b = model(idx), model(changed)
    assert torch.equal(a[:, :9], b[:, :9])  # positions before 9 see nothing of token 9
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_fused_equals_literal():
    literal, fused = pair_of_models()
    idx = torch.randint(0, 97, (4, 16))
    assert (literal(idx) - fused(idx)).abs().max() <= 1e-5


def _kernel_or_skip():
    from mu import kernels

    if kernels.load() is None:
        pytest.skip("mu's block-attention kernel cannot be built here (needs a C++ compiler and ninja); SDPA is used")
    return kernels


def _loss_and_grads(model: MU, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and every parameter's gradient of a fixed function of them; block parameters stacked per block
    (the literal form's 16 Linear layers as the fused form stores them)."""
    model.zero_grad()
    logits = model(idx)
    (logits * torch.linspace(-1, 1, logits.shape[-1])).sum().backward()
    grads = {}
    for name, param in model.named_parameters():
        if ".blocks." not in name:
            grads[name] = param.grad
    for i, layer in enumerate(model.layers):
        blocks = layer.blocks
        if hasattr(blocks, "qkv_weight"):
            parts = (blocks.qkv_weight.grad, blocks.qkv_bias.grad, blocks.out_weight.grad, blocks.out_bias.grad)
        else:
            parts = tuple(torch.stack([getattr(m, attr).grad for m in modules])
                          for modules in (blocks.qkv, blocks.out) for attr in ("weight", "bias"))
            parts = (parts[0], parts[1], parts[2], parts[3])
        for key, grad in zip(("qkv_weight", "qkv_bias", "out_weight", "out_bias"), parts):
            grads[f"layers.{i}.blocks.{key}"] = grad
    return logits.detach(), grads


@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernel", "sdpa"])
@pytest.mark.parametrize("batch,length", [(3, 16), (2, 7), (1, 13), (1, 1), (2, 3)])
def test_fast_path_equals_literal_values_and_gradients(use_kernel, batch, length):
    """The one-call block attention (kernel or SDPA) = the 16 literal per-block attentions: logits and every
    gradient, full context, odd lengths, a sequence shorter than a 4-token attention tile, batch size 1."""
    if use_kernel:
        _kernel_or_skip()
    literal, fused = pair_of_models()
    for lit_layer, layer in zip(literal.layers, fused.layers):
        lit_layer.cross.use_kernel = False  # the reference: per-block attentions, explicit cross-block attention
        layer.blocks.use_kernel = layer.cross.use_kernel = use_kernel
    idx = torch.randint(0, 97, (batch, length), generator=torch.Generator().manual_seed(length))
    want, want_grads = _loss_and_grads(literal, idx)
    got, got_grads = _loss_and_grads(fused, idx)
    assert (want - got).abs().max() <= 1e-5
    assert want_grads.keys() == got_grads.keys()
    for name, grad in want_grads.items():
        assert torch.allclose(got_grads[name], grad, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("batch,length", [(1, 1), (1, 5), (2, 33), (8, 128)])
def test_block_attention_kernel_equals_sdpa(batch, length):
    """The kernel on a raw [q | k | v] projection = causal SDPA over its 32 heads of size 2, values and gradients."""
    from mu.model import _merge_heads, _split_heads

    kernels = _kernel_or_skip()
    qkv = (3 * torch.randn(batch, length, 192, generator=torch.Generator().manual_seed(length))).requires_grad_()
    grad = torch.randn(batch, length, 64)
    got = kernels.block_attention(qkv, 32)
    (got_grad,) = torch.autograd.grad(got, qkv, grad)
    q, k, v = _split_heads(qkv.double(), 32)  # the reference in float64: float32 SDPA itself is off by ~1e-4 here
    want = _merge_heads(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
    (want_grad,) = torch.autograd.grad(want, qkv, grad.double())
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-4)
    assert torch.allclose(got_grad, want_grad, rtol=1e-5, atol=5e-4)
    assert torch.allclose(got[:, :1], qkv[:, :1, 128:].detach(), atol=1e-6)  # the first token sees only its own value


@pytest.mark.parametrize("batch,length", [(1, 1), (1, 6), (3, 17), (8, 128)])
def test_cross_attention_kernel_equals_explicit_form(batch, length):
    """The cross-block attention kernel = the explicit form: output and entropy, and gradients through both."""
    from mu.model import CrossBlockAttention

    _kernel_or_skip()
    torch.manual_seed(length)
    cross = CrossBlockAttention()
    x = torch.randn(batch, length, 64, requires_grad=True)
    grad_y, grad_e = torch.randn(batch, length, 64), torch.randn(batch, length)
    results = []
    for use_kernel in (True, False):
        cross.use_kernel = use_kernel
        y, entropy = cross(x)
        grads = torch.autograd.grad((y, entropy), [x, *cross.parameters()], (grad_y, grad_e))
        results.append((y, entropy, grads))
    (y, e, g), (y_ref, e_ref, g_ref) = results
    assert torch.allclose(y, y_ref, atol=1e-5) and torch.allclose(e, e_ref, atol=1e-5)
    for got, want in zip(g, g_ref):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    assert (e[:, 0].abs() < 1e-6).all()  # the first token attends to itself alone: entropy 0


def test_without_a_compiler_mu_warns_once_and_uses_the_pytorch_forms(monkeypatch, caplog):
    import torch.utils.cpp_extension

    from mu import kernels

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: command not found")

    monkeypatch.setattr(kernels, "_tried", False)
    monkeypatch.setattr(kernels, "_module", None)
    monkeypatch.setattr(torch.utils.cpp_extension, "load_inline", no_compiler)
    torch.manual_seed(0)
    model = MU(MUConfig(**TINY)).eval()
    with caplog.at_level("WARNING", logger="mu.kernels"):
        logits = model(torch.randint(0, 97, (2, 9)))
        model(torch.randint(0, 97, (1, 4)))
    assert logits.shape == (2, 9, 97) and not kernels.available(logits)
    warnings = [r.getMessage() for r in caplog.records if r.name == "mu.kernels"]
    assert len(warnings) == 1 and "command not found" in warnings[0] and "PyTorch forms" in warnings[0]
    monkeypatch.setenv("MU_KERNELS", "0")
    monkeypatch.setattr(kernels, "_tried", False)
    assert kernels.load() is None  # asked for the PyTorch forms


@pytest.mark.parametrize("use_kernel", [True, False], ids=["kernels", "pytorch"])
def test_kv_cache_matches_full_forward(use_kernel):
    """Cached steps (prompt, then one token at a time) = the full forward; cached = uncached greedy generation."""
    if use_kernel:
        _kernel_or_skip()
    torch.manual_seed(0)
    model = MU(MUConfig(**TINY)).eval()
    for layer in model.layers:
        layer.blocks.use_kernel = layer.cross.use_kernel = use_kernel
    idx = torch.randint(0, 97, (1, 12))
    full = model.hidden(idx)
    for grad in (False, True):  # without autograd the kernels' cached form, with it the PyTorch one
        caches = [{} for _ in model.layers]
        with torch.set_grad_enabled(grad):
            steps = [model.hidden(idx[:, :5], caches, start=0)]
            steps += [model.hidden(idx[:, t:t + 1], caches, start=t) for t in range(5, 12)]
        assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    cached = generate(model, [5, 6, 7], 10, temperature=0, use_cache=True, repetition_penalty=1.0)
    uncached = generate(model, [5, 6, 7], 10, temperature=0, use_cache=False, repetition_penalty=1.0)
    assert cached == uncached


@pytest.mark.parametrize("variant", [{}, {"block_attention": "off"}], ids=["mu", "block_attention=off"])
@pytest.mark.parametrize("batch", [1, 2])
def test_one_call_decode_step_equals_the_layers_forward(variant, batch):
    """mu.decode's kernel step (one call through every layer) = the full forward, position by position,
    across a buffer regrowth; greedy generation through it = uncached generation; it declines where it does not apply."""
    _kernel_or_skip()
    from mu.decode import Decoder

    torch.manual_seed(0)
    model = MU(MUConfig(**{**TINY, "max_seq_len": 48}, **variant)).eval()
    idx = torch.randint(0, 97, (batch, 40))
    with torch.inference_mode():
        full = model.hidden(idx)
        caches = [{} for _ in model.layers]
        model.hidden(idx[:, :3], caches, start=0)  # row buffers of 16: positions 16.. regrow them
        decoder = Decoder.build(model)
        steps = [decoder.hidden(idx[:, t:t + 1], caches, t) for t in range(3, 40)]
        assert decoder.hidden(idx[:, 5:6], caches, 5) is None  # not the next position: left to the layers
    assert torch.allclose(torch.cat(steps, dim=1), full[:, 3:], atol=1e-5)
    greedy = {"temperature": 0, "repetition_penalty": 1.0}
    assert generate(model, [5, 6], 30, use_cache=True, **greedy) == generate(model, [5, 6], 30, use_cache=False, **greedy)
    assert Decoder.build(build_model(MUConfig(**TINY, gate="off"))) is None
    assert Decoder.build(build_model(MUConfig(**TINY, arch="transformer"))) is None
    assert Decoder.build(MU(MUConfig(**TINY)).train()) is None


VARIANTS = [{"gate": "off"}, {"block_attention": "off"}, {"arch": "transformer"}, {"arch": "transformer", "width": 0}]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()))
def test_ablations_and_baseline_are_causal_language_models_with_a_cache(variant):
    torch.manual_seed(0)
    model = build_model(MUConfig(**TINY, **variant)).eval()
    idx = torch.randint(0, 97, (2, 16))
    assert model(idx).shape == (2, 16, 97)
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 97
    assert torch.equal(model(idx)[:, :9], model(changed)[:, :9])
    caches = [{} for _ in model.layers]
    steps = [model.hidden(idx[:1, :5], caches, start=0)] + [model.hidden(idx[:1, t:t + 1], caches, start=t)
                                                            for t in range(5, 16)]
    assert torch.allclose(torch.cat(steps, dim=1), model.hidden(idx[:1]), atol=1e-5)
    greedy = {"temperature": 0, "repetition_penalty": 1.0}
    assert generate(model, [5, 6], 8, use_cache=True, **greedy) == generate(model, [5, 6], 8, use_cache=False, **greedy)


def test_ablations_remove_exactly_their_part():
    full = build_model(MUConfig(**TINY))
    no_gate = build_model(MUConfig(**TINY, gate="off"))
    no_blocks = build_model(MUConfig(**TINY, block_attention="off"))
    names = {n for n, _ in full.named_parameters()}
    assert names - {n for n, _ in no_gate.named_parameters()} == {n for n in names if ".gate." in n}
    assert names - {n for n, _ in no_blocks.named_parameters()} == {n for n in names if ".blocks." in n}


@pytest.mark.parametrize("vocab", [8192, 50_000])
def test_matched_transformer_is_within_5_percent_of_mu(vocab):
    mu_counts = parameter_counts(MU(MUConfig(vocab_size=vocab)))
    same = parameter_counts(build_model(MUConfig(vocab_size=vocab, arch="transformer")))
    matched = build_model(MUConfig(vocab_size=vocab, arch="transformer", width=0))
    assert matched.config.width % matched.config.n_heads == 0
    assert abs(parameter_counts(matched)["total"] / mu_counts["total"] - 1) <= 0.05
    assert same["total"] < mu_counts["total"]  # same width and depth: no gate affinity tables
    for counts in (mu_counts, same):
        assert counts["total"] == counts["embedding"] + counts["output"] + counts["non_embedding"]
    assert mu_counts["embedding"] == vocab * 64 + 128 * 64 + 6 * vocab * 16  # token, position, 6 affinity tables


@pytest.mark.parametrize("variant", [{"block_attention": "literal"}, {"block_attention": "literal", "gate": "off"},
                                     {"block_attention": "off"}, {"arch": "transformer"}])
def test_training_flops_per_token_match_a_flop_counter(variant):
    """The analytic count equals torch's FlopCounterMode over forward + backward (the literal form has
    the block-diagonal projections as real per-block matmuls; the math SDPA backend and the explicit
    cross-block attention expose their matmuls)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    config = MUConfig(**TINY, **variant)
    model = build_model(config)
    for module in model.modules():  # the kernels do the same arithmetic, out of the counter's sight
        if hasattr(module, "use_kernel"):
            module.use_kernel = False
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randint(0, 97, (2, 16))).sum().backward()
    assert counter.get_total_flops() / (2 * 16) == training_flops_per_token(config)


def test_set_machinery_is_shared_and_torch_free():
    code = ("import sys, trainloop, sharedcore.overrides, smartprice.presets, mu.cli; "
            "from smartprice.cli import parse_sets; assert parse_sets is sharedcore.overrides.parse_sets; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    code = "import sys, mu.train; print('smartprice' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_repetition_penalty_lowers_negative_and_positive_logits():
    logits = torch.tensor([2.0, -2.0, 0.5, -1.0])
    out = apply_repetition_penalty(logits, torch.tensor([0, 1]), 1.25)
    assert out[0] == pytest.approx(1.6) and out[1] == pytest.approx(-2.5)
    assert out[2] == 0.5 and out[3] == -1.0
    before, after = logits.softmax(-1), out.softmax(-1)
    assert after[0] < before[0] and after[1] < before[1]
    assert torch.equal(apply_repetition_penalty(logits, torch.tensor([0, 1, 0, 0]), 1.25), out)  # once per token


def test_sampling_respects_top_k_and_top_p():
    logits = torch.tensor([5.0, 4.0, 0.0, -1.0, -3.0])
    generator = torch.Generator().manual_seed(0)
    drawn = {sample_token(logits, 2, 1.0, generator) for _ in range(200)}
    assert drawn <= {0, 1}
    assert {sample_token(logits, 0, 0.5, generator) for _ in range(50)} == {0}


def test_tokenizer_round_trip():
    tokenizer = train_tokenizer(CORPUS.splitlines(), vocab_size=300)
    text = "Once upon a time, the quick brown fox!"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
    assert tokenizer.get_vocab_size() <= 300
    assert tokenizer.token_to_id("<PAD>") == 0 and tokenizer.token_to_id("<EOS>") == 3


def _train_args(tmp_path, out, *extra):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    return [sys.executable, "-m", "mu", "train", "--train", str(corpus), "--valid", str(corpus), "--out", str(out),
            "--set", "n_layers=2", "--set", "vocab_size=300", "--set", "max_seq_len=16", "--set", "loop.batch_size=4",
            "--set", "loop.grad_accum=2", "--set", "loop.warmup_max_steps=2", "--set", "loop.progress=false", *extra]


def test_train_save_load_generate_cli(tmp_path):
    out = tmp_path / "model"
    result = subprocess.run(_train_args(tmp_path, out, "--set", "loop.epochs=1", "--set", "loop.max_steps_per_epoch=2"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    history = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"valid_loss", "valid_accuracy", "valid_perplexity"} <= set(history)
    assert "sample 'Once upon a time'" in result.stderr
    assert "non-embedding" in result.stderr and "MFLOPs per training token" in result.stderr  # what it built
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / name).exists()
    gen = subprocess.run([sys.executable, "-m", "mu", "generate", str(out), "The quick", "--max-new-tokens", "5",
                          "--seed", "1"], capture_output=True, text=True)
    assert gen.returncode == 0 and gen.stdout.startswith("The quick")
    ev = subprocess.run([sys.executable, "-m", "mu", "eval", str(out), str(tmp_path / "corpus.txt")],
                        capture_output=True, text=True)
    metrics = json.loads(ev.stdout)
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["loss"], rel=1e-6)


def test_matched_transformer_trains_saves_and_loads(tmp_path):
    from mu.train import load_model, resolve, train_mu

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    preset = resolve("test", {"arch": "transformer", "width": "0", "n_heads": "4", "n_layers": "2", "vocab_size": "300",
                              "max_seq_len": "16", "loop.batch_size": "4", "loop.epochs": "1", "loop.max_steps_per_epoch": "2",
                              "sample_tokens": "0", "loop.progress": "false"})
    history = train_mu([str(corpus)], [str(corpus)], tmp_path / "model", preset).history
    assert "valid_perplexity" in history[-1]
    model, tokenizer = load_model(tmp_path / "model")
    assert model.config.arch == "transformer" and model.config.width > 0  # the matched width is saved resolved
    mu_total = parameter_counts(MU(MUConfig(vocab_size=model.config.vocab_size, n_layers=2, max_seq_len=16)))["total"]
    assert abs(parameter_counts(model)["total"] / mu_total - 1) <= 0.05


def test_cli_errors_are_one_line(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "mu", "train", "--train", str(tmp_path / "none.txt"), "--out",
                          str(tmp_path / "m"), "--set", "nope=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown preset field(s) nope" in bad.stderr and "Traceback" not in bad.stderr
    mixed = subprocess.run([sys.executable, "-m", "mu", "train", "--train", str(tmp_path / "none.txt"), "--out",
                            str(tmp_path / "m"), "--set", "arch=transformer", "--set", "gate=off"],
                           capture_output=True, text=True)
    assert mixed.returncode == 2 and "a transformer has neither" in mixed.stderr
    flat = subprocess.run([sys.executable, "-m", "mu", "train", "--train", str(tmp_path / "none.txt"), "--out",
                           str(tmp_path / "m"), "--set", "epochs=1"], capture_output=True, text=True)
    assert flat.returncode == 2 and "--set loop.epochs=VALUE" in flat.stderr and "Traceback" not in flat.stderr


def test_cli_user_mistakes_are_one_line_and_bugs_show_a_traceback(tmp_path, monkeypatch, capsys):
    from mu import cli
    from mu import train as mu_train

    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "model").mkdir()
    cases = [["train", "--train", str(tmp_path / "none.txt"), "--out", str(tmp_path / "m")],
             ["train", "--train", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "m")],
             ["train", "--train", str(tmp_path), "--out", str(tmp_path / "m")],
             ["eval", str(tmp_path / "model"), str(tmp_path / "latin1.txt")]]
    for argv in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("mu: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err

    def broken(*args, **kwargs):
        raise KeyError("an internal table lost its key")

    monkeypatch.setattr(mu_train, "train_mu", broken)
    (tmp_path / "ok.txt").write_text("some text\n")
    assert cli.main(["train", "--train", str(tmp_path / "ok.txt"), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "an internal table lost its key" in err and "this is a bug in mu" in err


def test_sigkill_and_resume_gives_the_same_model(tmp_path):
    from safetensors.torch import load_file

    straight = tmp_path / "straight"
    subprocess.run(_train_args(tmp_path, straight, "--set", "loop.epochs=3"), check=True, capture_output=True)

    killed = tmp_path / "killed"
    kill_after_first_epoch(_train_args(tmp_path, killed, "--set", "loop.epochs=3"), killed / "checkpoint")
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    subprocess.run(_train_args(tmp_path, killed, "--set", "loop.epochs=3", "--resume"), check=True, capture_output=True)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


BENCH = Path(__file__).resolve().parents[1] / "bench" / "mu.py"
# Enough text for windows of bench/mu.py's seq 128 in the 5% held-out tail (~1,000 tokens there).
BENCH_TEXT = [f"The quick brown fox number {i} jumps over the lazy dog near river {i % 13}." for i in range(800)]


@pytest.fixture(scope="module")
def bench_mu():
    """bench/mu.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_mu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench_split(bench_mu, tmp_path):
    """The fitting text and the held-out tail, as bench/mu.py writes them."""
    return bench_mu.split_training_text(BENCH_TEXT, tmp_path)


def test_learning_rate_choice_never_reads_the_test_text(bench_mu, bench_split, tmp_path, monkeypatch):
    import mu.train

    assert not any("test" in p for p in inspect.signature(bench_mu.choose_lr).parameters)
    fit, held = bench_split
    read: list[str] = []
    original = mu.train.read_lines

    def recording(paths):
        read.extend(str(p) for p in paths)
        return original(paths)

    monkeypatch.setattr(bench_mu, "read_lines", recording)
    monkeypatch.setattr(mu.train, "read_lines", recording)
    args = ("MU without both parts (post-LN core)", (1e-3, 4e-3, 1e-2), 4, 2, 300, fit, held)
    chosen, trials = bench_mu.choose_lr(*args, tmp_path / "a", extend=0)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "wikitext2_test.txt").write_text("zzz qqq " * 5000)  # would change the choice if it were read
    monkeypatch.setattr(bench_mu, "CORPUS", garbage)
    again, trials_again = bench_mu.choose_lr(*args, tmp_path / "b", extend=0)
    assert chosen == again and sorted(trials) == [1e-3, 4e-3, 1e-2]
    assert [t["valid_loss"] for t in trials.values()] == [t["valid_loss"] for t in trials_again.values()]
    assert set(read) == {str(fit), str(held)}


def test_bench_seeds_give_different_runs_and_the_same_seed_the_same_run(bench_mu, bench_split, tmp_path):
    fit, held = bench_split

    def curve(seed: int, name: str) -> list:
        return bench_mu.run("MU", 2e-3, seed, 4, 2, 300, fit, held, tmp_path / name)["curve"]

    first = curve(0, "a")
    assert curve(0, "b") == first
    assert curve(1, "c") != first


SHARED_CORPUS = BENCH.parents[2] / "shared" / "corpus"


def test_bench_says_what_it_cannot_run_and_fails_where_that_was_the_point(tmp_path):
    """Without the corpus, --skip-speed (only the comparison) names the missing files and how to get them, exit 2."""
    result = subprocess.run([sys.executable, str(BENCH), "--skip-speed", "--threads", "1", "--corpus", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "comparison was not run" in result.stderr and "wikitext2_valid.txt" in result.stderr
    assert "--corpus DIR" in result.stderr and "Traceback" not in result.stderr
    assert "not_run" in json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_quick_end_to_end(tmp_path):
    """`python bench/mu.py --quick`: profile, speed, LR trials, seeds, table, PNG and the JSON line (~1-2 min on 1 thread)."""
    if not all((SHARED_CORPUS / name).is_file() for name in ("wikitext2_valid.txt", "wikitext2_test.txt")):
        pytest.skip(f"shared corpus not available: {SHARED_CORPUS} lacks wikitext2_valid.txt / wikitext2_test.txt "
                    "(bench/mu.py --quick needs ../shared/corpus)")
    png = tmp_path / "curves.png"
    result = subprocess.run([sys.executable, str(BENCH), "--quick", "--threads", "1", "--png", str(png)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["speed"]["fused_vs_bound"] > 0 and out["speed"]["step_ratio_vs_core"] > 0 and png.exists()
    assert "| whole layer |" in result.stdout and "MU layer / core layer" in result.stdout
    models = out["comparison"]["models"]
    assert len(models) == 4
    for r in models.values():
        assert len(r["trials"]) >= 3 and r["lr"] in {float(k) for k in r["trials"]}
        assert len(r["equal_time"]) == len(r["equal_tokens"]) == 2
        assert len({x["seed"] for x in r["equal_time"]}) == 2
    assert "mean ± s.e. of 2 seeds" in result.stdout and "duration:" in result.stdout
