"""``metatune meta-train``: meta-train a policy on a family and write a prior folder."""

from __future__ import annotations

from metatune.clitools import UsageError, load_family, positive_int as _positive

ENV_METHODS = ("task_params", "task_indices", "clean", "evaluate")


def cmd_meta_train(args) -> int:
  # pylint: disable=import-outside-toplevel
  from metatune.meta.config import apply_settings, choices, meta_config
  from metatune.meta.train import meta_train, table_markdown

  cfg, family = load_family(args.family, args.data_dir)
  missing = [m for m in ENV_METHODS if not hasattr(family, m)]
  if missing:
    raise UsageError(f"{args.family}: family {cfg.family!r} is not a jittable environment "
                     f"(it lacks {', '.join(missing)}); meta-train on its surrogate instead")
  settings = args.settings or []
  node = apply_settings(cfg.meta_train, settings)
  config = meta_config(node, num_updates=args.updates, num_envs=args.envs,
                       num_trials=args.trials, seed=args.seed)
  card = meta_train(family, config, args.out, checkpoint_every=args.checkpoint_every,
                    progress=not args.no_progress, evaluate=not args.no_eval,
                    card_extra={"family_config": cfg.to_dict(), "family_config_path": cfg.source,
                                "settings": settings,
                                "choices": choices(node, config, settings)},
                    transfer_design=args.transfer_design)
  print(f"prior written to {args.out} (policy {card['policy_hash']})")
  if "heldout" in card:
    held = card["heldout"]
    print(f"held-out tasks ({held['split']}, {held.get('num_tasks', 0)}): normalized regret, "
          "mean ± s.e.\n")
    print(table_markdown(held))
  return 0


def add_commands(sub) -> None:
  """Registers ``meta-train`` on the top-level subparsers."""
  p = sub.add_parser(
      "meta-train", help="meta-train a policy on a family (writes a prior folder)",
      description="Meta-trains the structured policy with PPO on the tasks of a family's "
      "meta_train split (settings: the config's meta_train section, overridden by the flags), "
      "with a progress bar, checkpoints and an exact resume (run it again with the same --out), "
      "then compares it with random and quasi-random search on the held-out tasks.")
  p.add_argument("family", metavar="FAMILY.yaml", help="family config (configs/families/)")
  p.add_argument("--out", required=True, help="prior folder (created; resumed if it exists)")
  p.add_argument("--updates", type=_positive, default=None, help="iterations (num_updates)")
  p.add_argument("--envs", type=_positive, default=None, help="studies per iteration")
  p.add_argument("--trials", type=_positive, default=None, help="trials per study")
  p.add_argument("--seed", type=int, default=None, help="seed")
  p.add_argument("--set", action="append", default=None, dest="settings", metavar="KEY=VALUE",
                 help="a meta_train setting over the family config (reward=regret, "
                 "ent_start=0.03, policy.structure=false); repeatable, checked as the file is, "
                 "recorded on the card")
  p.add_argument("--checkpoint-every", type=_positive, default=25,
                 help="iterations between checkpoints (default 25)")
  p.add_argument("--data-dir", default=None, help="data folder (default: $METATUNE_DATA_DIR)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--no-eval", action="store_true", help="skip the held-out comparison")
  p.add_argument("--transfer-design", type=int, default=512, metavar="N",
                 help="configurations evaluated on the training tasks for the hybrid prior's "
                 "portfolio and profile (default 512; 0: none, the prior is the policy only)")
  p.set_defaults(fn=cmd_meta_train)
