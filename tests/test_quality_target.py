"""experiments/quality/target.py: each of issue 12's targets is checked as the issue states it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

sys.path[:0] = [str(REPO / "experiments" / "quality"), str(REPO / "experiments")]
from target import checks, markdown, rare_over_common  # noqa: E402

CLASSES = ["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"]


def record(**changes) -> dict:
    """A run that meets every target; `changes` spoil some."""
    r = {"cond_acc_class": dict(zip(CLASSES, [0.6, 0.5, 0.7, 0.7])),
         "cond_acc_real_class": dict(zip(CLASSES, [0.6, 0.5, 0.7, 0.7])),
         "kid_class": dict(zip(CLASSES, [0.1, 0.1, 0.1, 0.15])), "kid_real_class": dict(zip(CLASSES, [0, 0, 0, 0.9])),
         "fd_ratio": 1.8, "recall": 0.93, "coverage": 0.91, "ssim_div": 0.47, "ssim_div_real": 0.45,
         "audit_p1": 0.01, "audit_p5": 0.06, "seed": 1, "device": "cpu (2 cores)", "wall_s": 600, "kimg": 290}
    r.update(changes)
    return r


def failed(r: dict) -> set[str]:
    return {name for name, _, ok in checks(r) if ok is False}


def test_a_run_meeting_every_target_passes_them_all():
    assert failed(record()) == set()
    assert "Targets met per seed: 11/11." in markdown([record()])


def test_each_target_fails_on_its_own_figure():
    assert failed(record(cond_acc_class=dict(zip(CLASSES, [0.6, 0.44, 0.7, 0.7])))) == {
        "cond acc VeryMildDemented >= 0.9 x judge"}
    assert failed(record(kid_class=dict(zip(CLASSES, [0.1, 0.1, 0.1, 0.21])))) == {"rare KID <= 2 x common mean"}
    assert failed(record(fd_ratio=2.3)) == {"FD <= 2 x floor"}
    assert failed(record(recall=0.89, coverage=0.5)) == {"recall >= 0.9", "coverage >= 0.9"}
    assert failed(record(ssim_div=0.49)) == {"SSIM diversity within 0.03 of real"}
    assert failed(record(ssim_div=0.41)) == {"SSIM diversity within 0.03 of real"}
    assert failed(record(audit_p1=0.025, audit_p5=0.11)) == {"audit p1 <= 2%", "audit p5 <= 10%"}


def test_the_rare_floor_line_is_shown_but_not_counted_as_a_target():
    r = record(kid_class=dict(zip(CLASSES, [0.0, 0.0, 0.0, 0.59])))
    text = markdown([r, record(seed=2)])
    assert "| (rare KID vs its real-vs-real floor) | 0.59 vs 0.90 ✓ |" in text
    assert "Targets met per seed: 10/11, 11/11." in text


def test_the_per_class_copying_test_is_shown_but_not_counted_as_a_target():
    """The calibrated audit: a row when the record has per-class z, failed by a class below -3, never counted
    among the issue's 11 targets; records from before it have no such row."""
    clean = record(audit_copying_z=dict(zip(CLASSES, [2.0, 0.5, 1.0, -1.8])))
    copied = record(audit_copying_z=dict(zip(CLASSES, [2.0, 0.5, 1.0, -3.4])))
    assert failed(clean) == set() and failed(copied) == {"(data-copying test: every class z >= -3)"}
    text = markdown([clean, copied, record(seed=3)])
    assert "| (data-copying test: every class z >= -3) | rare -1.8, min -1.8 ✓ | rare -3.4, min -3.4 ✗ | – |" in text
    assert "Targets met per seed: 11/11, 11/11, 11/11." in text
    probed = record(c2st_class=dict(zip(CLASSES, [0.98, 0.97, 0.9, 0.86])))
    assert failed(probed) == set()
    assert "| (C2ST per class, 0.5 = indistinguishable) | 0.98/0.97/0.90/0.86 |" in markdown([probed])


def test_the_rare_kid_against_new_renders_is_shown_but_not_counted_as_a_target():
    """class_kid.py's figure: the rare class's KID against new renders of its class, within 2x the common classes'
    mean; a row when the record has it, never counted among the issue's 11."""
    drawn = record(kid_new_class=dict(zip(CLASSES, [0.02, 0.01, 0.03, 0.039])))
    missed = record(kid_new_class=dict(zip(CLASSES, [0.02, 0.01, 0.03, 0.05])))
    assert failed(drawn) == set()
    assert failed(missed) == {"(rare KID <= 2 x common mean, against new renders, x100)"}
    text = markdown([drawn, missed, record(seed=3)])
    assert "| (rare KID <= 2 x common mean, against new renders, x100) | 3.9 vs 4.0 ✓ | 5.0 vs 4.0 ✗ | – |" in text
    assert "Targets met per seed: 11/11, 11/11, 11/11." in text
    assert rare_over_common(dict(zip(CLASSES, [0.1, 0.3, 0.2, 0.6]))) == pytest.approx(3.0)
    no_ratio = record(kid_new_class=dict(zip(CLASSES, [-0.01, 0.0, 0.01, 0.05])))  # common mean 0: no bound
    assert rare_over_common(no_ratio["kid_new_class"]) is None and failed(no_ratio) == set()


def test_the_table_names_the_machine_when_its_runs_come_from_several():
    """A 10-min budget is 150-350 kimg depending on the 2-core machine: columns say which CPU when they differ."""
    same = markdown([record(cpu="AMD EPYC"), record(seed=2, cpu="AMD EPYC")])
    assert "| target | seed 1 | seed 2 |" in same
    mixed = markdown([record(cpu="Intel Xeon"), record(seed=2, cpu="AMD EPYC"), record(seed=3)])
    assert "| target | seed 1 (Intel Xeon) | seed 2 (AMD EPYC) | seed 3 (CPU not recorded) |" in mixed


def test_a_gpu_run_is_labelled_with_its_gpu_and_its_shorter_budget():
    """The GPU preset's runs sit beside the CPU preset's: the column says which GPU, and a budget not the preset's."""
    text = markdown([record(), record(device="cuda", gpu="NVIDIA H200", max_time="00:00:03:00", kimg=1102)])
    assert "| target | seed 1 | seed 1 (NVIDIA H200, 00:00:03:00) |" in text
    assert "| training: minutes / kimg | 10.0 / 290 | 10.0 / 1102 |" in text


def test_the_gpu_preset_has_its_own_hash_that_follows_both_files(tmp_path, monkeypatch):
    """A GPU record stays in the table only while neither the preset nor the GPU preset built on it changed."""
    import target
    cpu, gpu = tmp_path / "cpu.yaml", tmp_path / "gpu.yaml"
    cpu.write_text("a: 1\n")
    gpu.write_text("b: 1\n")
    monkeypatch.setattr(target, "PRESET_FILE", cpu)
    monkeypatch.setattr(target, "GPU_PRESET_FILE", gpu)
    before_cpu, before_gpu = target.preset_sha(), target.preset_sha(gpu=True)
    assert before_cpu != before_gpu
    gpu.write_text("b: 2\n")
    assert target.preset_sha() == before_cpu and target.preset_sha(gpu=True) != before_gpu
    cpu.write_text("a: 2\n")
    assert target.preset_sha() != before_cpu


def test_ladder_table_gives_a_ci_for_one_seed_and_each_seed_for_more():
    from run import table
    one = record(row="r", kimg=120.0, wall_s=300, fd_ratio=3.0, fd=0.3, fd_floor=0.1, fd_ci=[0.2, 0.5],
                 recall_ci=[0.9, 0.95], coverage_ci=[0.88, 0.93], ms_div=0.5, ms_div_real=0.49)
    assert "| 3.0 [2.0, 5.0] | – | 0.93 [0.90, 0.95] |" in table([one])  # no FD at equal n measured
    two = [dict(one, row="s", fd_ratio=r, recall=c, seed=k) for k, (r, c) in enumerate([(3.0, 0.9), (5.0, 0.94)])]
    assert "| 4.0 (3.0, 5.0) | – | 0.92 (0.90, 0.94) |" in table(two)
    assert table([one]).splitlines()[2].endswith("| – | – |")  # no C2ST or D r_v measured
    probed = [dict(r, c2st_class=dict(zip(CLASSES, [0.9 + k / 20, 0.8, 0.7, 0.6])),
                   d_overfit_class=dict(zip(CLASSES, [0.1, 0.0, 0.05, 0.5 + k / 5]))) for k, r in enumerate(two)]
    assert table(probed).splitlines()[2].endswith("| 0.93/0.80/0.70/0.60 | 0.10/0.00/0.05/0.60 |")


def test_fd_is_judged_at_equal_n_over_spaces_when_measured_and_the_old_ratio_is_shown_beside_it():
    """Records from session 19 on carry FD/floor at equal n over 5 spaces: the target reads that, the old
    one-space, 1024-vs-306 ratio becomes a bracketed line; older records keep their row."""
    new = record(fd_ratio=1.5, fd_ratio_spaces=4.2, fd_ratio_spaces_range=[2.1, 8.0])
    assert failed(new) == {"FD <= 2 x floor (equal n, mean of 5 spaces)"}
    assert failed(record(fd_ratio=3.0, fd_ratio_spaces=1.9, fd_ratio_spaces_range=[1.2, 2.5])) == set()
    text = markdown([record(), new])
    assert "| FD <= 2 x floor (equal n, mean of 5 spaces) | – | 4.2x [2.1, 8.0] ✗ |" in text
    assert "| (FD/floor as recorded before: 1024 vs 306 images, space 0) | – | 1.5x |" in text
    assert "Targets met per seed: 11/11, 10/11." in text
    from run import table
    one = record(row="r", kimg=120.0, wall_s=300, fd_ratio=3.0, fd=0.3, fd_floor=0.1, fd_ci=[0.2, 0.5],
                 ms_div=0.5, ms_div_real=0.49, fd_ratio_spaces=6.0, fd_ratio_spaces_range=[3.0, 9.5])
    assert "| 3.0 [2.0, 5.0] | 6.0 [3.0, 9.5] |" in table([one])
    two = [one, dict(one, seed=2, fd_ratio_spaces=8.0)]
    assert "| 7.0 (6.0, 8.0) |" in table(two)


def test_a_run_that_kept_best_ckpt_shows_that_state_beside_its_last():
    best = {k: v for k, v in record(fd_ratio=1.2, fd_ratio_spaces=2.5, fd_ratio_spaces_range=[1.5, 4.0],
                                    recall=0.96).items() if k not in ("seed", "device", "wall_s")}
    r = record(fd_ratio=3.0, fd_ratio_spaces=6.0, fd_ratio_spaces_range=[3.0, 9.0], best={**best, "kimg": 100.0})
    text = markdown([r])
    assert "| target | seed 1 | seed 1 best.ckpt |" in text
    assert "| FD <= 2 x floor (equal n, mean of 5 spaces) | 6.0x [3.0, 9.0] ✗ | 2.5x [1.5, 4.0] ✗ |" in text
    assert "| training: minutes / kimg | 10.0 / 290 | 10.0 / 100 |" in text
    from run import table
    lines = table([dict(r, row="r", kimg=346.0, ms_div=0.5, ms_div_real=0.49, fd=0.3, fd_floor=0.1)]).splitlines()
    assert lines[2].startswith("| r | 1 | 346.0 |") and lines[3].startswith("| r (best.ckpt) | 1 | 346.0 |")
    assert "| 6.0 [3.0, 9.0] |" in lines[2] and "| 2.5 [1.5, 4.0] |" in lines[3]


def test_only_the_latest_record_of_a_reused_run_folder_is_measured_again(tmp_path):
    from run import runs_on_disk
    for name in ("s1", "s2"):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
    (tmp_path / "s1" / "checkpoints" / "last.ckpt").touch()
    old, new = record(run_dir=str(tmp_path / "s1")), record(run_dir=str(tmp_path / "s1"), kimg=66)
    gone = record(run_dir=str(tmp_path / "s2"))  # its checkpoints were deleted
    assert runs_on_disk([old, gone, new]) == [new]


def test_the_five_space_row_names_the_number_of_spaces_the_record_was_measured_in():
    """A smoke evaluation reads two spaces: its row says so instead of the ladder's five."""
    two = record(fd_ratio_spaces=3.0, fd_ratio_spaces_range=[2.0, 4.0], fd_spaces_n=2)
    assert "FD <= 2 x floor (equal n, mean of 2 spaces)" in failed(two)
    assert "FD <= 2 x floor (equal n, mean of 5 spaces)" in failed(record(fd_ratio_spaces=3.0,
                                                                           fd_ratio_spaces_range=[2.0, 4.0]))


def test_the_budget_table_counts_the_targets_each_variant_meets():
    from budget import table
    good = record(variant="preset", img_per_s=410.0, fd_ratio_spaces=1.5, fd_ratio_spaces_range=[1.2, 1.9])
    worse = record(variant="w24", seed=2, img_per_s=500.0, recall=0.85, fd_ratio_spaces=6.0,
                   fd_ratio_spaces_range=[3.0, 9.0])
    paired = record(variant="w24", img_per_s=500.0, fd_ratio_spaces=3.0, fd_ratio_spaces_range=[2.0, 4.0])
    lines = table([worse, good, paired]).splitlines()
    assert lines[2].startswith("| preset | 1 | 290 | 410 | 1.5x [1.2, 1.9] | – | 0.93 |") and lines[2].endswith("| 11/11 |")
    assert lines[3].startswith("| w24 | 1 | 290 | 500 | 3.0x [2.0, 4.0] | 2.00 | 0.93 |")
    assert lines[4].startswith("| w24 | 2 | 290 | 500 | 6.0x [3.0, 9.0] | – | 0.85 |") and lines[4].endswith("| 9/11 |")
    assert lines[5].startswith("| w24 / preset, geometric mean over 1 seed(s) | | | | | 2.00 (2.00-2.00) |")
    assert "w24: model.generator.width=24 model.discriminator.width=24" in lines[-1]


def test_the_budget_pairs_a_variant_with_target_py_runs_of_its_own_preset_version(tmp_path, monkeypatch):
    """target.py runs the preset as typed with the same evaluation: its CPU runs stand in for the variant
    "preset" of their version; GPU and excluded runs do not."""
    import budget
    results = tmp_path / "results"
    results.mkdir()
    typed = [record(preset_sha="new", fd_ratio_spaces=2.0), record(preset_sha="new", seed=2, fd_ratio_spaces=9.0,
                                                                   excluded="killed"),
             record(preset_sha="new", seed=3, device="gpu", fd_ratio_spaces=1.0)]
    (results / "target.jsonl").write_text("".join(json.dumps(r) + "\n" for r in typed))
    monkeypatch.setattr(budget, "HERE", tmp_path)
    variant = [record(variant="lr4", preset_sha=sha, seed=seed, fd_ratio_spaces=1.0)
               for sha, seed in [("new", 1), ("old", 1), ("new", 2)]]
    presets = budget.preset_runs_of_target(variant)
    assert [(r["variant"], r["seed"], r["source"]) for r in presets] == [("preset", 1, "target.py")]
    assert budget.preset_runs_of_target([dict(v, cpu="another CPU") for v in variant]) == []
    lines = budget.table(variant + presets).splitlines()
    assert lines[2].startswith("| preset (target.py) | 1 |")
    assert any(x.startswith("| lr4 / preset, geometric mean over 1 seed(s) | | | | | 0.50 (0.50-0.50) |") for x in lines)


def test_the_budget_pairs_a_longer_budget_only_with_the_preset_at_that_budget():
    """--max-time: a slower machine's 18 minutes reach the kimg a faster one's 10 do; such a run is read against the
    preset's run at 18 minutes on the same seed and CPU, never against its 10-minute run, and its row says so."""
    from budget import table
    short = record(variant="preset", fd_ratio_spaces=8.0)
    long = record(variant="preset", max_time="00:00:18:00", fd_ratio_spaces=4.0)
    variant = record(variant="adc03_common", max_time="00:00:18:00", fd_ratio_spaces=2.0)
    unpaired = record(variant="adc03_common", seed=2, max_time="00:00:18:00", fd_ratio_spaces=2.0)
    lines = table([short, long, variant, unpaired]).splitlines()
    assert any(x.startswith("| adc03_common, 00:00:18:00 | 1 | 290 |") and "| 0.50 |" in x for x in lines)
    assert any(x.startswith("| adc03_common, 00:00:18:00 | 2 | 290 |") and "| – |" in x for x in lines)
    assert any(x.startswith("| adc03_common, 00:00:18:00 / preset, geometric mean over 1 seed(s) | | | | | 0.50 ")
               for x in lines)


def test_a_grouped_run_is_paired_only_with_the_presets_of_its_group():
    """--group: two machines reporting one CPU name differ in speed, so a session's variant is read against that
    session's preset runs; the ungrouped runs keep their own pairs (earlier ratios do not move)."""
    from budget import table
    old_preset, old_variant = record(variant="preset", fd_ratio_spaces=4.0), record(variant="adc", fd_ratio_spaces=2.0)
    new_preset = record(variant="preset", group="s34", fd_ratio_spaces=8.0, source="target.py")
    new_variant = record(variant="adc", group="s34", fd_ratio_spaces=2.0)
    lines = table([old_preset, old_variant, new_preset, new_variant]).splitlines()
    assert any(x.startswith("| adc | 1 | 290 |") and "| 0.50 |" in x for x in lines)
    assert any(x.startswith("| adc [s34] | 1 | 290 |") and "| 0.25 |" in x for x in lines)
    assert any(x.startswith("| preset (target.py) [s34] | 1 |") for x in lines)
    assert "| target | seed 1 | seed 1 [s34] |" in markdown([record(), record(group="s34")])
    from run import group_suffix  # a group's run folders never replace another group's checkpoints
    assert group_suffix("s35") == "_s35" and group_suffix(None) == group_suffix("") == ""


def test_match_kimg_trains_each_seed_its_preset_runs_images_and_pairs_with_that_run(tmp_path, monkeypatch):
    """--match-kimg s35: seed S trains the steps that show the images seed S's preset run of group s35 saw, on
    whichever machine, and is read against that run alone; a seed without such a run stops the script first."""
    import budget
    results = tmp_path / "results"
    results.mkdir()
    sha = budget.preset_sha()
    typed = [record(preset_sha=sha, group="s35", cpu="Xeon", kimg=226.6, run_dir="p1", fd_ratio_spaces=5.0),
             record(preset_sha=sha, group="s35", seed=2, cpu="Xeon", kimg=231.0, run_dir="p2", excluded="killed"),
             record(preset_sha=sha, group="s34", seed=3, cpu="Xeon", kimg=240.0, run_dir="p3"),
             record(preset_sha="old", group="s35", seed=4, cpu="Xeon", kimg=240.0, run_dir="p4")]
    (results / "target.jsonl").write_text("".join(json.dumps(r) + "\n" for r in typed))
    monkeypatch.setattr(budget, "HERE", tmp_path)
    found = budget.matched_presets("s35", [1], sha)
    assert found[1]["run_dir"] == "p1"
    for seed in (2, 3, 4):  # excluded, another group, another preset version
        with pytest.raises(SystemExit, match=rf"--match-kimg s35: no run of preset {sha} for seed\(s\) \[{seed}\]"):
            budget.matched_presets("s35", [1, seed], sha)
    assert budget.matched_steps(found[1], 128) == 3540  # 1770 batches of 128 = 226.6 kimg
    assert budget.batch_of("adc03_common_rise") == 128 and budget.batch_of("b64") == 64
    preset = dict(typed[0], variant="preset", source="target.py")
    matched = record(variant="adc03_common_rise", preset_sha=sha, group="s35", cpu="AMD", pair_cpu="Xeon",
                     kimg_of="p1", kimg=226.6, fd_ratio_spaces=4.0)
    timed = record(variant="adc03_common_rise", preset_sha=sha, group="s35", cpu="Xeon", fd_ratio_spaces=10.0)
    lines = budget.table([preset, matched, timed]).splitlines()
    assert any(x.startswith("| adc03_common_rise, its preset run's kimg [s35] | 1 | 227 |") and "| 0.80 |" in x
               for x in lines)
    assert any(x.startswith("| adc03_common_rise, its preset run's kimg / preset, geometric mean over 1 seed(s) "
                            "| | | | | 0.80 ") for x in lines)
    # the same variant in its 10 minutes on the same seed is its own pair, not replaced by the matched run
    assert any(x.startswith("| adc03_common_rise / preset, geometric mean over 1 seed(s) | | | | | 2.00 ")
               for x in lines)


@pytest.mark.parametrize("extra, message", [
    (["--group", "s36"], "--match-kimg sets the budget and the group itself; leave out --max-time and --group"),
    (["--variants", "preset"], "--match-kimg pairs variants with target.py's preset runs; leave 'preset' out")])
def test_match_kimg_refuses_a_second_budget_or_the_preset_in_one_line(extra, message):
    path = REPO / "experiments" / "quality" / "budget.py"
    result = subprocess.run([sys.executable, str(path), "--match-kimg", "s35", "--variants", "w24", *extra],
                            capture_output=True, text=True)
    assert result.returncode != 0 and result.stderr.strip() == f"error: {message}"


def test_truncation_py_reads_none_and_positive_numbers_and_refuses_the_rest_in_one_line():
    from truncation import parse_truncations
    assert parse_truncations("none,2,1.5") == [None, 2.0, 1.5]
    for bad in ("0", "-1", "half"):
        with pytest.raises(SystemExit, match=f"--truncations: '{bad}' is neither 'none' nor a positive number"):
            parse_truncations(f"none,{bad}")


@pytest.mark.parametrize("script", ["budget.py", "target.py", "sentence.py"])
def test_a_malformed_max_time_is_refused_in_one_line_before_any_training(script):
    path = REPO / "experiments" / "quality" / script
    result = subprocess.run([sys.executable, str(path), "--seeds", "1", "--max-time", "18m"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip() == "error: --max-time '18m': expected DD:HH:MM:SS, e.g. 00:00:18:00"


def test_measuring_the_discriminator_again_reads_only_the_latest_run_of_a_folder(tmp_path, monkeypatch):
    """run.py --measure-d: a folder reused by a later run of the row holds that run's checkpoint, so the earlier
    record of the folder is left unmeasured instead of being given the later run's discriminator."""
    import run
    (tmp_path / "r_s1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r_s1" / "checkpoints" / "last.ckpt").touch()
    old = {"row": "r", "seed": 1, "run_dir": str(tmp_path / "r_s1"), "kimg": 120.0}
    new = dict(old, kimg=346.0)
    gone = {"row": "g", "seed": 1, "run_dir": str(tmp_path / "g_s1"), "kimg": 120.0}
    monkeypatch.setattr(run, "measure_discriminator", lambda r: {"ModerateDemented": r["kimg"]})
    run.add_discriminator_figures([old, gone, new])
    assert "d_overfit_class" not in old and "d_overfit_class" not in gone
    assert new["d_overfit_class"] == {"ModerateDemented": 346.0}


def test_the_sentence_table_shows_each_arm_once_per_seed_with_the_latest_run():
    """sentence.py: a rerun of an arm and seed replaces its row; the arms of a seed sit side by side, the shipped
    sentence first."""
    from sentence import table

    def run(arm, seed, rare_acc, **changes):
        return record(variant=arm, seed=seed, max_time="00:00:06:00", cpu="CPU", ms_div=None,
                      cond_acc_class=dict(zip(CLASSES, [0.6, 0.5, 0.7, rare_acc])), audit_copying_z=None,
                      fd_ratio_spaces=5.0, **changes)

    records = [run("unbalanced", 1, 0.04), run("default", 1, 0.10), run("default", 1, 0.80), run("default", 2, 0.7)]
    rows = [x for x in table(records).splitlines() if x.startswith(("| default", "| unbalanced"))]
    assert [x.split(" | ")[:2] for x in rows] == [["| default", "1"], ["| unbalanced", "1"], ["| default", "2"]]
    assert "0.60/0.50/0.70/0.80" in rows[0] and "0.60/0.50/0.70/0.04" in rows[1]
    assert "0.10/0.10/0.10/0.15" in rows[0]


def test_the_audit_reference_flags_samples_nearer_their_training_images_than_new_real_images(tmp_path):
    """audit_reference.py: a class whose samples all sit nearer the training images than its new real images gets a
    strongly negative z and closer 1.0; a class drawn like its new images gets z near 0; the shares below the
    held-out percentiles are counted per class and pooled; audits in different feature spaces are refused."""
    import csv

    from audit_reference import compare

    def audit(folder, distances, p1=0.2):
        folder.mkdir()
        (folder / "audit.json").write_text(json.dumps({"holdout_p1": p1, "holdout_p5": 0.3, "n_train": 100,
                                                       "n_holdout": 40, "feature": "cnn", "c2st": {CLASSES[3]: 0.9}}))
        with open(folder / "audit.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["index", "file", "class", "distance", "nearest_train_file", "nearest_train_class"])
            for i, (name, d) in enumerate(distances):
                writer.writerow([i, "", name, d, "", name])
        return folder

    spread = [0.1 + 0.01 * i for i in range(40)]  # 0.10 .. 0.49
    new = [(c, d) for c in CLASSES for d in spread]
    samples = [(c, d) for c in CLASSES[:3] for d in spread] + [(CLASSES[3], d / 10) for d in spread]
    result = compare(audit(tmp_path / "run", samples), audit(tmp_path / "ref", new))
    rare, common = result["per_class"][CLASSES[3]], result["per_class"][CLASSES[0]]
    assert rare["z"] < -5 and rare["closer"] == 1.0 and abs(common["z"]) < 0.5
    assert rare["samples_p1"] == 1.0 and rare["new_p1"] == common["new_p1"] == common["samples_p1"] == 0.25
    assert result["pooled"]["samples_p1"] == (3 * 10 + 40) / 160 and result["pooled"]["new_p5"] == 0.5
    assert rare["c2st_samples"] == 0.9
    with pytest.raises(SystemExit, match="holdout_p1"):
        compare(tmp_path / "run", audit(tmp_path / "ref_other", new, p1=0.25))


def test_table_only_rewrites_the_table_from_the_records_and_trains_nothing():
    """--table (after class_kid.py --record): an empty smoke record file gives the empty table, not a training run."""
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "quality" / "target.py"), "--table", "--smoke"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "(not run yet)", out.stderr
