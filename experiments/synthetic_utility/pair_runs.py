"""Paired difference between regimes of two `ganlab.augment` runs, e.g. a new mix against an earlier run's fill.

    python experiments/synthetic_utility/pair_runs.py <run A>/rows.jsonl "<regime A>" <run B>/rows.jsonl "<regime B>"

Pairing across runs is valid only when a seed means the same classifier in both: same real data, test set
and classifier settings. The script checks it: the baseline (`--baseline`, default "real only") must score
identically seed by seed in both runs, or it refuses. `--baseline none` skips that check, for runs that differ on
purpose in a classifier setting that draws no random numbers (e.g. classifier.input_blur, which changes every
regime's scores, the baseline's too); a seed still fixes the same initialisation and data order there. Prints
A - B per seed and its 95% t-interval, for balanced accuracy and the minority class's recall.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ganlab.utility.paired import by_seed, paired_ci
from run import job_rows


def per_seed(rows: list[dict], regime: str, path: Path) -> dict[int, dict]:
    out = by_seed(rows, regime, lambda r: r)
    if not out:
        raise SystemExit(f"error: {path} has no regime {regime!r} (it has {sorted({r['regime'] for r in rows})})")
    return out


def compare(rows_a, regime_a, rows_b, regime_b, minority: int, baseline="real only", paths=("A", "B")) -> dict:
    """A - B per shared seed (balanced accuracy, recall of class index `minority`) with 95% t-intervals."""
    a, b = per_seed(rows_a, regime_a, paths[0]), per_seed(rows_b, regime_b, paths[1])
    bases = () if baseline == "none" else (per_seed(rows_a, baseline, paths[0]), per_seed(rows_b, baseline, paths[1]))
    seeds = sorted(set(a).intersection(b, *bases))
    if len(seeds) < 2:
        with_baseline = " and the baseline" if bases else ""
        raise SystemExit(f"error: the runs share {len(seeds)} seed(s) with both regimes{with_baseline}; pairing needs 2+")
    differs = [s for s in seeds if bases and bases[0][s]["recall"] != bases[1][s]["recall"]]
    if differs:
        raise SystemExit(f"error: {baseline!r} differs between the runs on seed(s) {differs}: other real data, test "
                         "set or classifier, so their seeds do not pair")
    out = {"seeds": seeds}
    for key, get in (("balanced_accuracy", lambda r: r["balanced_accuracy"]),
                     ("minority_recall", lambda r: r["recall"][minority])):
        mean, ci = paired_ci([get(a[s]) - get(b[s]) for s in seeds])
        out[key] = {"diff": mean, "ci95": ci}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rows_a", type=Path)
    p.add_argument("regime_a")
    p.add_argument("rows_b", type=Path)
    p.add_argument("regime_b")
    p.add_argument("--baseline", default="real only", help="the regime that must score identically per seed in "
                   "both runs; 'none': no check (runs that differ on purpose, e.g. in classifier.input_blur)")
    p.add_argument("--minority", type=int, default=None, help="class index (default: the run's results.json minority)")
    args = p.parse_args(argv)
    for path in (args.rows_a, args.rows_b):
        if path.name != "rows.jsonl" or not path.is_file():
            raise SystemExit(f"error: {path} is not a ganlab.augment run folder's rows.jsonl")
    minority = args.minority
    if minority is None:
        results = json.loads((args.rows_a.parent / "results.json").read_text())
        minority = results["class_names"].index(results["minority"])
    r = compare(job_rows(args.rows_a.parent), args.regime_a, job_rows(args.rows_b.parent), args.regime_b, minority,
                args.baseline, (args.rows_a, args.rows_b))
    print(f"{args.regime_a} ({args.rows_a.parent.name}) - {args.regime_b} ({args.rows_b.parent.name}), "
          f"seeds {r['seeds']}, " + ("baseline not checked:" if args.baseline == "none" else
                                     "baseline identical per seed:"))
    for key in ("balanced_accuracy", "minority_recall"):
        d = r[key]
        print(f"  {key}: {d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")


if __name__ == "__main__":
    main(sys.argv[1:])
