"""Training: it learns, checkpoints, and resumes after an interruption without losing steps."""

import json

import pytest
import torch

from saescope.errors import SaescopeError
from saescope.sae.formats import load_sae
from saescope.sae.training import TrainConfig, _TrainLoop, train_sae

SMALL = dict(hook="blocks.1.hook_resid_post", features=256, k=8, tokens=40 * 256, batch_size=256,
             buffer_tokens=2048, model_batch=8, context=32, warmup_steps=5, log_every=1, dtype="float32")


def _log(folder):
    return [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]


def test_topk_training_learns_and_saves_a_loadable_sae(lm, tmp_path):
    sae = train_sae(TrainConfig(**SMALL, checkpoint_every=1000), tmp_path / "run", lm=lm, progress=False)
    log = _log(tmp_path / "run")
    assert len(log) == 40 and log[-1]["fvu"] < 0.75 * log[0]["fvu"]
    assert all(entry["l0"] <= 8 for entry in log)
    loaded = load_sae(tmp_path / "run")
    assert loaded.cfg.hook_name == "blocks.1.hook_resid_post" and loaded.cfg.metadata["trained_tokens"] == 40 * 256
    torch.testing.assert_close(loaded.W_dec.norm(dim=-1), torch.ones(256), rtol=1e-4, atol=1e-4)
    assert torch.equal(loaded.W_enc, sae.W_enc)


def test_interrupted_training_resumes_from_its_last_checkpoint(lm, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original_step = _TrainLoop._step

    def step_then_die(self, x, share=None):
        if self.state.step == 23:
            raise KeyboardInterrupt
        return original_step(self, x, share)

    monkeypatch.setattr(_TrainLoop, "_step", step_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_sae(TrainConfig(**SMALL, checkpoint_every=10), out, lm=lm, progress=False)
    monkeypatch.setattr(_TrainLoop, "_step", original_step)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 20
    with pytest.raises(SaescopeError, match="--resume"):
        train_sae(TrainConfig(**SMALL, checkpoint_every=10), out, lm=lm, progress=False)
    other_k = {**SMALL, "k": 12}  # a k-8 checkpoint resumed with k 12: refused, the setting named
    with pytest.raises(SaescopeError, match=r"cannot resume: .* written with k \d+, not \d+"):
        train_sae(TrainConfig(**other_k, checkpoint_every=10), out, resume=True, lm=lm, progress=False)
    train_sae(TrainConfig(**SMALL, checkpoint_every=10), out, resume=True, lm=lm, progress=False)
    steps = [entry["step"] for entry in _log(out)]
    assert steps[-20:] == list(range(21, 41))  # resumed right after the checkpoint, nothing skipped
    seconds = [entry["seconds"] for entry in _log(out)]  # the step log times every step (bench_train reads it)
    assert seconds[0] > 0 and seconds[-20:] == sorted(seconds[-20:])
    assert load_sae(out).cfg.metadata["trained_tokens"] == 40 * 256


@pytest.mark.parametrize("activation", ["batchtopk", "relu", "jumprelu"])
def test_other_activations_train_and_reduce_fvu(lm, tmp_path, activation):
    config = TrainConfig(**{**SMALL, "tokens": 20 * 256}, activation=activation, sparsity_coeff=1e-3,
                         checkpoint_every=1000)
    if activation != "batchtopk":
        config.k = None
    sae = train_sae(config, tmp_path / activation, lm=lm, progress=False)
    log = _log(tmp_path / activation)
    assert log[-1]["fvu"] < log[0]["fvu"]
    assert load_sae(tmp_path / activation).cfg.activation == activation
    if activation == "batchtopk":
        assert float(sae.threshold.min()) > 0


def test_epochs_replay_cached_activations(lm, tmp_path):
    train_sae(TrainConfig(**{**SMALL, "tokens": 24 * 256}, epochs=3, checkpoint_every=1000), tmp_path / "run",
              lm=lm, progress=False)
    assert len(_log(tmp_path / "run")) == 24
    assert not (tmp_path / "run" / "activations").exists() and not (tmp_path / "run" / "checkpoint").exists()
    train_sae(TrainConfig(**{**SMALL, "tokens": 24 * 256}, epochs=3, checkpoint_every=1000, keep_activations=True),
              tmp_path / "kept", lm=lm, progress=False)
    assert list((tmp_path / "kept" / "activations").glob("shard_*.safetensors"))


def test_bad_training_input(lm, tmp_path):
    with pytest.raises(SaescopeError, match="positive"):
        TrainConfig(tokens=0)
    with pytest.raises(SaescopeError, match="out of range"):
        train_sae(TrainConfig(**{**SMALL, "hook": "blocks.31.hook_resid_post"}), tmp_path / "x", lm=lm)
    with pytest.raises(SaescopeError, match="nothing to resume"):
        train_sae(TrainConfig(**SMALL), tmp_path / "y", resume=True, lm=lm)


def test_ctrl_c_stops_after_the_step_saves_a_checkpoint_and_resumes(lm, tmp_path, monkeypatch):
    import os
    import signal

    from saescope.errors import JobInterrupted

    out = tmp_path / "run"
    original_step = _TrainLoop._step

    def step_with_ctrl_c(self, x, share=None):
        if self.state.step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C during step 6
        return original_step(self, x, share)

    monkeypatch.setattr(_TrainLoop, "_step", step_with_ctrl_c)
    with pytest.raises(JobInterrupted, match="step 6 of 12.*--resume") as caught:
        train_sae(TrainConfig(**{**SMALL, "tokens": 12 * 256}, checkpoint_every=1000), out, lm=lm, progress=False)
    assert caught.value.exit_code == 130
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 6
    monkeypatch.setattr(_TrainLoop, "_step", original_step)
    train_sae(TrainConfig(**{**SMALL, "tokens": 12 * 256}, checkpoint_every=1000), out, resume=True, lm=lm,
              progress=False)
    assert [entry["step"] for entry in _log(out)][-1] == 12 and not (out / "checkpoint").exists()


def test_a_folder_left_by_a_run_killed_before_its_first_checkpoint_is_refused(lm, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_config.json").write_text("{}")
    (out / "training_log.jsonl").write_text("")
    with pytest.raises(SaescopeError, match="not empty"):
        train_sae(TrainConfig(**SMALL), out, lm=lm, progress=False)


def test_the_shuffle_buffer_never_exceeds_a_short_run():
    short = TrainConfig(tokens=24576, features=256, k=8, batch_size=2048)
    assert short.shuffle_buffer == 2 * 2048  # not the 262,144 default: the first step comes within seconds
    assert TrainConfig(tokens=12_000_000, epochs=3).shuffle_buffer == 262_144
    assert TrainConfig(tokens=2_000_000).shuffle_buffer == 250_000


def test_heldout_metrics_are_logged_during_training_and_match_sae_eval(lm, tmp_path):
    from saescope.sae.evaluation import evaluate_sae

    sae = train_sae(TrainConfig(**SMALL, checkpoint_every=1000, eval_every=20, eval_tokens=256), tmp_path / "run",
                    lm=lm, progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "heldout_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [20, 40]
    assert log[1]["fvu"] < log[0]["fvu"] and 0 < log[1]["ce_loss_score"] <= 1
    final = evaluate_sae(lm, sae, tokens=256, progress=False)  # the last line is the saved SAE's sae eval
    assert log[1]["fvu"] == pytest.approx(final.fvu, rel=1e-5) and log[1]["l0"] == pytest.approx(final.l0)


def test_the_matryoshka_loss_is_the_sum_of_the_prefix_fvus():
    from saescope.sae.core import SAE, SAEConfig
    from saescope.sae.objectives import ThresholdTracker, _batch_topk, objective

    torch.manual_seed(0)
    sae = SAE(SAEConfig(8, 16, "batchtopk", 3, "blocks.0.hook_resid_post"))
    x = torch.randn(32, 8)
    dead = torch.zeros(16, dtype=torch.bool)
    result = objective(sae, x, dead, 0.0, 0.0, matryoshka=[4, 16])
    feats = _batch_topk(sae.encode_pre(x), sae, ThresholdTracker())
    variance = (x - x.mean(0)).pow(2).sum()
    fvu = lambda m: float((feats[:, :m] @ sae.W_dec[:m] + sae.b_dec - x).pow(2).sum() / variance)
    assert float(result.loss.detach()) == pytest.approx(fvu(16) + fvu(4), rel=1e-5)
    assert result.fvu == pytest.approx(fvu(16), rel=1e-5)
    assert TrainConfig(activation="batchtopk", features=64, matryoshka="8,32").matryoshka == [8, 32, 64]
    with pytest.raises(SaescopeError, match="need --activation batchtopk"):
        TrainConfig(activation="topk", matryoshka=[8])
    with pytest.raises(SaescopeError, match="must increase strictly"):
        TrainConfig(activation="batchtopk", features=64, matryoshka=[32, 8])


def test_matryoshka_latents_reconstruct_alone(lm, tmp_path):
    """The point of Matryoshka: the first latents reconstruct well without the rest, the full width as well
    as plain BatchTopK (40 steps, same seed)."""
    from saescope.sae.core import SAE
    from saescope.sae.evaluation import evaluate_sae

    fvus = {}
    for name, widths in (("plain", None), ("matryoshka", [32, 256])):
        settings = {**SMALL, "activation": "batchtopk"}
        sae = train_sae(TrainConfig(**settings, checkpoint_every=1000, matryoshka=widths), tmp_path / name, lm=lm,
                        progress=False)
        prefix = SAE(sae.cfg)
        prefix.load_state_dict(sae.state_dict())
        with torch.no_grad():
            prefix.W_dec[32:] = 0
        fvus[name] = (evaluate_sae(lm, sae, tokens=512, progress=False).fvu,
                      evaluate_sae(lm, prefix, tokens=512, progress=False).fvu)
    assert fvus["matryoshka"][1] < fvus["plain"][1] - 0.05  # the first 32 latents alone
    assert fvus["matryoshka"][0] < fvus["plain"][0] + 0.03  # the whole dictionary
