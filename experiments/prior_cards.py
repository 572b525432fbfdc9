"""Time to a prior: what each prior folder's card says about its meta-training, in one table.

  python experiments/prior_cards.py .cache_data/priors/yahpo_rbv2_xgboost ... \
      --out paper/tables/priors.md

Reads only the cards (`card.json`, written by `metatune meta-train`): the family, the tasks
seen, the horizon, PPO's seconds with the first iteration (compilation included) on its own,
and the seconds spent on the transfer data (design, profile, portfolio).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys


def row(folder: pathlib.Path) -> str:
  card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
  tr, mt, tf = card.get("training", {}), card.get("meta_train", {}), card.get("transfer", {})
  ppo = tr.get("seconds_this_run")
  first = tr.get("first_iteration_seconds_incl_compile")
  transfer = tf.get("seconds")
  total = (ppo or 0.0) + (transfer or 0.0)
  fmt = lambda v: "-" if v is None else f"{v:.1f}"
  return (f"| `{folder}` | {card.get('family_config_path', card.get('family'))} | "
          f"{len(card.get('tasks_seen', []))} | {mt.get('num_envs')} x {card.get('num_trials')} x "
          f"{tr.get('iterations')} | {fmt(ppo)} | {fmt(first)} | "
          f"{fmt(None if ppo is None or first is None else ppo - first)} | {fmt(transfer)} | "
          f"{fmt(total)} | {card.get('versions', {}).get('jax', '-')} | {card.get('policy_hash')} |")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("priors", nargs="+", help="prior folders (metatune meta-train --out)")
  parser.add_argument("--out", default="paper/tables/priors.md")
  args = parser.parse_args(argv)
  rows = []
  for p in args.priors:
    folder = pathlib.Path(p)
    if not (folder / "card.json").is_file():
      print(f"{folder}: no card.json (not a prior folder written by metatune meta-train)",
            file=sys.stderr)
      return 2
    rows.append(row(folder))
  text = [
      "# Time to a prior (from the priors' cards)", "",
      f"Produced by `python experiments/prior_cards.py {' '.join(args.priors)}` on "
      f"{datetime.date.today()}; the seconds were measured by `metatune meta-train` when it "
      "made each prior (on the shared 2-core CPU here) and stored on its card.", "",
      "| prior | family config | training tasks | studies x trials x iterations | PPO s | "
      "first iteration s (incl. compile) | PPO s after it | transfer data s | PPO + transfer s "
      "| jax | policy |",
      "|---|---|---:|---|---:|---:|---:|---:|---:|---|---|", *rows, ""]
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text("\n".join(text), encoding="utf-8")
  print("\n".join(text))
  return 0


if __name__ == "__main__":
  sys.exit(main())
