"""The tuning loop on the tiny model: runs end to end, records everything, fails safely."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from advisor.errors import AdvisorError
from advisor.forecaster.loading import ModelSpec, clear_cache, load_model, write_adapter_meta
from advisor.forecaster.modelstore import fingerprint
from advisor.forecaster.versions import base_key, ensure_model_version
from db.engine import session_scope
from db.models import ModelVersion, TrainingRun
from rlhf.loop import LoopOptions, TooFewPreferencesError, run_loop
from rlhf.preferences import record_choice
from rlhf.profiles import ARCHETYPES, get_user, require_profile, save_profile
from rlhf.registry import activate, active_version
from rlhf.train_pref import MIN_DPO_PAIRS
from tests.rlhf.conftest import add_candidates

OPTIONS = LoopOptions(
    train_period=(date(2014, 2, 3), date(2014, 3, 31)), eval_period=(date(2014, 4, 7), date(2014, 5, 30)),
    train_prompts=3, eval_prompts=3, candidates=2, dpo_steps=2, rm_steps=2, max_new_tokens=12,
    min_pairs=4,  # toy data on the tiny model: the loop's mechanics, not the floor (tested below)
)


@pytest.fixture
def tiny_sft(rlhf_db, tiny_model_dir: Path, tmp_path: Path) -> int:
    """A shared SFT adapter for the tiny base, registered as the global default."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    clear_cache()
    torch.manual_seed(0)
    path = tmp_path / "models" / "adapters" / "tiny-sft"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")).save_pretrained(path)
    fp = fingerprint(tiny_model_dir, cache_dir=tmp_path / "models")
    write_adapter_meta(path, base_model=str(tiny_model_dir), base_fingerprint=fp, extra={"kind": "sft", "parent_key": base_key(fp)})
    handle = load_model(ModelSpec(base=str(tiny_model_dir), adapter=path), tmp_path / "models")
    with session_scope(rlhf_db) as session:
        return ensure_model_version(session, handle, kind="sft").id


def human_pairs(factory, user: str, weeks: list[date]) -> None:
    for day in weeks:
        a, b = add_candidates(factory, ["Up by 1-2%", "Down by 3-4%"], day=day, ticker="BBB")
        with session_scope(factory) as session:
            row = get_user(session, user)
            record_choice(session, row, require_profile(session, row), a, b, "a")


def run(factory, tiny_model_dir: Path, tmp_path: Path, user: str, **overrides):
    options = LoopOptions(**{**OPTIONS.__dict__, **overrides})
    return run_loop(factory, tmp_path / "models", str(tiny_model_dir), user, options, tmp_path / "data")


def test_loop_trains_registers_and_reports(rlhf_db, tiny_model_dir: Path, tiny_sft: int, tmp_path: Path) -> None:
    with session_scope(rlhf_db) as session:
        save_profile(session, "ann", ARCHETYPES["aggressive"])
    human_pairs(rlhf_db, "ann", [date(2014, 2, 7), date(2014, 2, 14), date(2014, 2, 21), date(2014, 2, 28), date(2014, 4, 11)])
    result = run(rlhf_db, tiny_model_dir, tmp_path, "ann")
    assert result.method == "dpo" and result.parent_version_id == tiny_sft
    assert result.counts["train_pairs"] == 4 and result.counts["eval_pairs"] == 1
    assert Path(result.report_paths["json"]).is_file() and "Tuned vs parent" in Path(result.report_paths["markdown"]).read_text()
    assert result.report.preference_accuracy["tuned"]["n"] == 1
    with rlhf_db() as session:
        tuned = session.get(ModelVersion, result.tuned_version_id)
        reward = session.get(ModelVersion, result.reward_version_id)
        user = get_user(session, "ann")
        assert tuned.kind == "dpo" and tuned.parent_id == tiny_sft and tuned.user_id == user.id
        assert tuned.profile_id == require_profile(session, user).id
        assert reward.kind == "reward"
        runs = session.scalars(select(TrainingRun).where(TrainingRun.user_id == user.id)).all()
        assert {r.kind: r.status for r in runs} == {"reward": "succeeded", "dpo": "succeeded"}
        assert runs[1].data_snapshot["train"] == 4 and runs[1].metrics["evaluation"]["models"]["parent"] == tiny_sft
        # Identical (unparseable) views from a random model cannot beat the parent: not activated.
        assert result.activated is False and active_version(session, user) is None


def test_too_few_pairs_say_how_many_are_needed(rlhf_db, tiny_model_dir: Path, tiny_sft: int, tmp_path: Path) -> None:
    with session_scope(rlhf_db) as session:
        save_profile(session, "bob", ARCHETYPES["conservative"])
    with pytest.raises(TooFewPreferencesError, match=r"0 training pairs \(DPO needs 4: on fewer it swings the advisor on too little evidence\)"):
        run(rlhf_db, tiny_model_dir, tmp_path, "bob")
    with pytest.raises(AdvisorError, match="2 DPO steps of 2 pairs would train on 4 pairs, fewer than the 16 the loop requires"):
        run(rlhf_db, tiny_model_dir, tmp_path, "bob", min_pairs=MIN_DPO_PAIRS)  # the real floor, refused before any sampling
    with rlhf_db() as session:
        assert session.scalars(select(ModelVersion).where(ModelVersion.kind == "dpo")).all() == []


def test_a_failed_training_run_leaves_the_active_version_unchanged(rlhf_db, tiny_model_dir: Path, tiny_sft: int, tmp_path: Path, monkeypatch) -> None:
    from rlhf import loop

    with session_scope(rlhf_db) as session:
        save_profile(session, "cy", ARCHETYPES["moderate"])
        activate(session, get_user(session, "cy"), tiny_sft, "chosen by the user")
    human_pairs(rlhf_db, "cy", [date(2014, 2, 7), date(2014, 2, 14), date(2014, 2, 21), date(2014, 2, 28)])

    def broken(spec):
        raise RuntimeError("out of memory while training")

    monkeypatch.setattr(loop, "train_preferences", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        run(rlhf_db, tiny_model_dir, tmp_path, "cy")
    with rlhf_db() as session:
        user = get_user(session, "cy")
        assert active_version(session, user).id == tiny_sft
        policy = session.scalars(select(TrainingRun).where(TrainingRun.user_id == user.id, TrainingRun.kind == "dpo")).one()
        assert policy.status == "failed" and "out of memory" in policy.error
        assert session.scalars(select(ModelVersion).where(ModelVersion.kind == "dpo")).all() == []


def test_a_run_whose_every_step_is_worse_than_the_parent_changes_nothing(
    rlhf_db, tiny_model_dir: Path, tiny_sft: int, tmp_path: Path, monkeypatch,
) -> None:
    """When DPO keeps step 0 (the parent's own weights) no version is registered under the user's name and
    the active version stays; the run and the report say why."""
    import shutil

    from rlhf import loop

    with session_scope(rlhf_db) as session:
        save_profile(session, "fay", ARCHETYPES["moderate"])
        activate(session, get_user(session, "fay"), tiny_sft, "chosen by the user")
    human_pairs(rlhf_db, "fay", [date(2014, 2, 7), date(2014, 2, 14), date(2014, 2, 21), date(2014, 2, 28), date(2014, 4, 11)])

    def keeps_the_parent(spec):
        shutil.copytree(spec.parent_adapter, spec.out_dir, dirs_exist_ok=True)
        return {"method": "dpo", "steps": 2, "selected_step": 0, "selected_validation_loss": 0.6931, "validation_pairs": 6,
                "validation_curve": [{"step": 0, "loss": 0.6931}, {"step": 2, "loss": 0.7012}]}

    monkeypatch.setattr(loop, "train_preferences", keeps_the_parent)
    versions_before = _count_versions(rlhf_db)
    result = run(rlhf_db, tiny_model_dir, tmp_path, "fay")
    assert result.tuned_version_id is None and result.activated is False and result.counts["dpo_no_step_kept"] == 1
    text = Path(result.report_paths["markdown"]).read_text()
    assert "no DPO step did better than the parent" in text and "step 2: 0.701" in text
    with rlhf_db() as session:
        user = get_user(session, "fay")
        assert active_version(session, user).id == tiny_sft
        policy = session.scalars(select(TrainingRun).where(TrainingRun.user_id == user.id, TrainingRun.kind == "dpo")).one()
        assert policy.status == "succeeded" and policy.output_model_version_id is None
    assert _count_versions(rlhf_db) - versions_before <= 1  # at most the reward model; no policy version


def _count_versions(factory) -> int:
    with factory() as session:
        return len(session.scalars(select(ModelVersion)).all())


def test_a_user_without_an_adapter_to_start_from(rlhf_db, tiny_model_dir: Path, tmp_path: Path) -> None:
    from advisor.errors import AdvisorError

    with session_scope(rlhf_db) as session:
        save_profile(session, "dee", ARCHETYPES["moderate"])
    with pytest.raises(AdvisorError, match="advisor train sft"):
        run(rlhf_db, tiny_model_dir, tmp_path, "dee")


def test_a_profile_changed_mid_run_is_recorded_and_not_activated(rlhf_db, tiny_model_dir: Path, tiny_sft: int, tmp_path: Path, monkeypatch) -> None:
    """The run labels and records the profile it started with; the adapter it made is not switched on for the new one."""
    from rlhf import loop

    with session_scope(rlhf_db) as session:
        first, _ = save_profile(session, "eve", ARCHETYPES["aggressive"])
        first_id = first.id
    human_pairs(rlhf_db, "eve", [date(2014, 2, 7), date(2014, 2, 14), date(2014, 2, 21), date(2014, 2, 28), date(2014, 4, 11)])
    real_label = loop.label_outcomes

    def answer_again_then_label(session, store, user, profile, groups, **kwargs):
        with session_scope(rlhf_db) as other:
            save_profile(other, "eve", ARCHETYPES["conservative"])  # the user answers the questionnaire again meanwhile
        assert profile.id == first_id
        return real_label(session, store, user, profile, groups, **kwargs)

    monkeypatch.setattr(loop, "label_outcomes", answer_again_then_label)
    result = run(rlhf_db, tiny_model_dir, tmp_path, "eve", force_activate=True)
    assert result.activated is False and any("profile changed during the run" in n for n in result.report.notes)
    with rlhf_db() as session:
        user = get_user(session, "eve")
        assert require_profile(session, user).version == 2 and active_version(session, user) is None
        assert {r.profile_id for r in session.scalars(select(TrainingRun).where(TrainingRun.user_id == user.id))} == {first_id}
        assert session.get(ModelVersion, result.tuned_version_id).profile_id == first_id


def test_compare_two_tuned_users_writes_the_effect_report(rlhf_db, tiny_model_dir: Path, tiny_sft: int, tmp_path: Path) -> None:
    """The comparison's mechanics on the tiny model (its views do not parse; the real effect is measured at scale)."""
    from advisor.data.store import PreloadedMarketStore
    from rlhf.compare import CompareError, compare_users, pair_overlap
    from rlhf.loop import heldout_grid

    weeks = [date(2014, 2, 7), date(2014, 2, 14), date(2014, 2, 21), date(2014, 2, 28), date(2014, 4, 11)]
    pairs = [add_candidates(rlhf_db, ["Up by 1-2%", "Down by 3-4%"], day=day, ticker="BBB") for day in weeks]
    for name, archetype, choice in (("ann", "conservative", "b"), ("bob", "aggressive", "a")):
        with session_scope(rlhf_db) as session:
            save_profile(session, name, ARCHETYPES[archetype])
            user = get_user(session, name)
            for a, b in pairs:
                record_choice(session, user, require_profile(session, user), a, b, choice if a != pairs[0][0] else "a")
    with pytest.raises(CompareError, match="no tuned adapter yet"):
        with rlhf_db() as session:
            store = PreloadedMarketStore(session)
            grid = heldout_grid(store, store.tickers(), *OPTIONS.eval_period, 3, 0)
        compare_users(rlhf_db, tmp_path / "models", str(tiny_model_dir), ["ann", "bob"], grid, OPTIONS.eval_period, tmp_path / "data")
    for name in ("ann", "bob"):
        run(rlhf_db, tiny_model_dir, tmp_path, name)
    report, paths = compare_users(rlhf_db, tmp_path / "models", str(tiny_model_dir), ["ann", "bob"], grid, OPTIONS.eval_period, tmp_path / "data")
    assert report.windows == len(grid) == 3 and set(report.outcome) == {"ann", "bob"}
    assert len(report.models) == 3, "two tuned adapters and their shared parent"
    text = Path(paths["markdown"]).read_text()
    assert "What the views say" in text and "The portfolio they give" in text and "Each user's own outcome" in text
    with rlhf_db() as session:
        overlap = pair_overlap(session, get_user(session, "ann"), get_user(session, "bob"))
    assert overlap.shared >= 5 and overlap.opposite_choice >= 4 and "chosen the opposite way" in overlap.describe()
    with pytest.raises(CompareError, match="two different users"):
        compare_users(rlhf_db, tmp_path / "models", str(tiny_model_dir), ["ann", "ann"], grid, OPTIONS.eval_period, tmp_path / "data")
