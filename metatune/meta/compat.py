"""What differs between the space a prior was meta-trained on and a space it is asked to tune.

A policy reads a space through its parameter tokens (`metatune.networks.tokens`: kind, scale,
conditionality, hashed words of names and choice labels), so it runs on any space; whether its
proposals mean anything there depends on how far that space is from the one it learned on. The
card keeps a description of the training space (`describe_space`); `compare_spaces` sets it
beside the target space and says what differs, for a warning (`warn_if_different`, used where
a prior becomes a tuner) or a refusal (``if not report.identical: raise ...``).

No jax here: the command line may import this before it imports anything heavy.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any, Mapping, Sequence

DESCRIPTION = "space_description"   # the card's key
_SHOWN = 6                          # names listed per kind of difference


class SpaceMismatchWarning(UserWarning):
  """A prior is used on a space other than the one it was meta-trained on."""


def describe_space(space) -> dict[str, Any]:
  """What a card keeps of a space: its parameters as the policy's tokens see them, JSON-ready.

  Args:
    space: a `metatune.space.Space`.

  Returns:
    ``{"name", "signature", "params": [{"name", "kind", "low", "high", "log", "choices",
    "when", "when_text"}], "constraints": [{"mode", "expr", "text"}]}``, parameters in
    dependency order; ``when`` and ``expr`` are the parsed expressions written back (what is
    compared), ``when_text`` and ``text`` as the space's author wrote them (what is shown).
  """
  from metatune.space import expr as ex  # pylint: disable=import-outside-toplevel
  params = [{"name": p.name, "kind": p.kind, "low": p.low, "high": p.high, "log": bool(p.log),
             "choices": list(p.choices) if p.kind != "bool" else [],
             "when": None if cond is None else ex.unparse(cond),
             "when_text": None if cond is None else (p.condition_text or ex.unparse(cond))}
            for p, cond in zip(space.params, space.conditions)]
  nodes = space._constraint_nodes  # pylint: disable=protected-access
  constraints = [{"mode": c.mode, "expr": ex.unparse(node), "text": c.text}
                 for c, node in zip(space.constraints, nodes)]
  # Through JSON, so a description made now compares equal to one read back from a card.
  return json.loads(json.dumps({"name": space.name, "signature": space.signature,
                                "params": params, "constraints": constraints}))


def _range(p: Mapping[str, Any]) -> str:
  if p["kind"] in ("float", "int"):
    return f"[{p['low']:g}, {p['high']:g}]" + (" log" if p["log"] else "")
  if p["kind"] == "bool":
    return "{False, True}"
  return "{" + ", ".join(map(str, p["choices"])) + "}"


def _names(names: Sequence[str]) -> str:
  more = len(names) - _SHOWN
  return ", ".join(names[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


@dataclasses.dataclass(frozen=True)
class SpaceReport:
  """The differences between a card's training space and a target space.

  Attributes:
    card_space, card_signature: the training space's name and signature (None on a card
      that does not record them).
    space, signature: the target space's name and signature.
    described: the card lists its space's parameters (cards written before this report
      existed record the signature only).
    unseen: parameters of the target space that the prior never saw.
    unused: parameters the prior was trained on that the target space lacks.
    kinds: ``(name, kind on the card, kind here)`` where the kind differs.
    ranges: ``(name, range on the card, range here)``: bounds or log scale of a number,
      choices of a categorical, ordinal values.
    conditions: ``(name, condition on the card, condition here)``; None is "always active".
    constraints: ``(added, removed)`` constraint texts (``require ...`` / ``forbid ...``).
  """
  card_space: str | None
  card_signature: str | None
  space: str
  signature: str
  described: bool
  unseen: tuple[str, ...] = ()
  unused: tuple[str, ...] = ()
  kinds: tuple[tuple[str, str, str], ...] = ()
  ranges: tuple[tuple[str, str, str], ...] = ()
  conditions: tuple[tuple[str, str | None, str | None], ...] = ()
  constraints: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

  @property
  def identical(self) -> bool:
    """The same space (equal signatures): nothing to say."""
    return self.card_signature is not None and self.card_signature == self.signature

  def differences(self) -> list[str]:
    """One line per kind of difference, in words (empty when `identical`)."""
    if self.identical:
      return []
    if not self.described:
      return ["the card does not list the parameters it was trained on (written by an older "
              "metatune), so what differs is unknown"]
    out = []
    if self.unseen:
      out.append(f"{len(self.unseen)} parameter(s) it never saw: {_names(self.unseen)}")
    if self.kinds:
      out.append("kinds differ: " + _names([f"{n} ({a} on the card, {b} here)"
                                            for n, a, b in self.kinds]))
    if self.ranges:
      out.append("ranges differ: " + _names([f"{n} ({a} on the card, {b} here)"
                                             for n, a, b in self.ranges]))
    if self.conditions:
      out.append("conditions differ: " + _names([
          f"{n} ({a or 'always active'} on the card, {b or 'always active'} here)"
          for n, a, b in self.conditions]))
    added, removed = self.constraints
    if added or removed:
      out.append("constraints differ: " + _names([f"+ {c}" for c in added] +
                                                 [f"- {c}" for c in removed]))
    if self.unused:
      out.append(f"{len(self.unused)} of its parameter(s) are not in this space: "
                 f"{_names(self.unused)}")
    if not out:
      out.append("the parameters, conditions and constraints agree; the signatures differ in "
                 "what the card does not record (sampling weights)")
    return out

  def message(self, prior: str = "the prior") -> str:
    """One line for a warning or an error, naming ``prior`` (e.g. its folder)."""
    if self.identical:
      return f"{prior} was meta-trained on this space ({self.signature})"
    trained = (f"space {self.card_space!r} ({self.card_signature})"
               if self.card_signature else "an unrecorded space")
    return (f"{prior} was meta-trained on {trained}, not on this space {self.space!r} "
            f"({self.signature}): " + "; ".join(self.differences()) +
            ". Its proposals there rest on parameter names and kinds alone.")


def compare_spaces(card: Mapping[str, Any], space) -> SpaceReport:
  """Compares the training space recorded on a prior's ``card`` with ``space``.

  Args:
    card: a prior's card (``card.json`` as a dict): ``space``, ``space_signature`` and
      ``space_description`` (`describe_space`) when recorded.
    space: the `metatune.space.Space` the prior is asked to tune.

  Returns:
    A `SpaceReport`; ``report.identical`` is True when the signatures agree.

  Example:
    >>> report = compare_spaces(card, space)  # doctest: +SKIP
    >>> if not report.identical:  # doctest: +SKIP
    ...   warnings.warn(report.message("prior/"))
  """
  here = describe_space(space)
  desc = card.get(DESCRIPTION)
  described = isinstance(desc, Mapping) and isinstance(desc.get("params"), list)
  base = dict(card_space=card.get("space"), card_signature=card.get("space_signature"),
              space=space.name, signature=space.signature, described=described)
  if not described or base["card_signature"] == base["signature"]:
    return SpaceReport(**base)
  theirs = {p["name"]: p for p in desc["params"] if isinstance(p, Mapping) and "name" in p}
  ours = {p["name"]: p for p in here["params"]}
  kinds, ranges, conditions = [], [], []
  for name, p in ours.items():
    q = theirs.get(name)
    if q is None:
      continue
    if q.get("kind") != p["kind"]:
      kinds.append((name, str(q.get("kind")), p["kind"]))
      continue
    if any(q.get(k) != p[k] for k in ("low", "high", "log", "choices")):
      ranges.append((name, _range({**p, **q}), _range(p)))
    if q.get("when") != p["when"]:
      conditions.append((name, q.get("when_text", q.get("when")), p["when_text"]))
  card_cons = {(c.get("mode"), c.get("expr")): f"{c.get('mode')} {c.get('text')}"
               for c in desc.get("constraints") or [] if isinstance(c, Mapping)}
  space_cons = {(c["mode"], c["expr"]): f"{c['mode']} {c['text']}" for c in here["constraints"]}
  return SpaceReport(
      **base, unseen=tuple(n for n in ours if n not in theirs),
      unused=tuple(n for n in theirs if n not in ours), kinds=tuple(kinds),
      ranges=tuple(ranges), conditions=tuple(conditions),
      constraints=(tuple(t for c, t in space_cons.items() if c not in card_cons),
                   tuple(t for c, t in card_cons.items() if c not in space_cons)))


def warn_if_different(card: Mapping[str, Any], space, prior: str = "the prior",
                      stacklevel: int = 2) -> SpaceReport:
  """`compare_spaces`, and a `SpaceMismatchWarning` when the spaces are not identical.

  Args:
    card: the prior's card.
    space: the space it is asked to tune.
    prior: how the message names the prior (its folder).
    stacklevel: passed to `warnings.warn` (2: the caller of this function).

  Returns:
    The report.
  """
  report = compare_spaces(card, space)
  if not report.identical:
    warnings.warn(report.message(prior), SpaceMismatchWarning, stacklevel=stacklevel + 1)
  return report
