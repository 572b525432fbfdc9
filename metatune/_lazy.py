"""Lazy re-exports for package ``__init__`` files (PEP 562), so importing a package costs nothing.

The command line imports `metatune.space.errors` and the ``cli`` modules of several packages
to build its parser; with eager ``__init__`` files that pulled in jax (seconds on a small CPU)
before ``--help`` could print. A package lists what it re-exports and from which module; a
name loads its module on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable, Mapping


def exports(package: str, names: Mapping[str, str]
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
  """The ``__getattr__``, ``__dir__`` and ``__all__`` of a package with lazy re-exports.

  Args:
    package: the package's ``__name__``.
    names: exported name -> the submodule (relative to ``package``) that defines it.

  Returns:
    ``(__getattr__, __dir__, __all__)``. ``__getattr__`` also imports a submodule that has
    not been imported yet (``metatune.space.io`` after ``import metatune.space``), as the
    eager ``__init__`` files did for the modules they imported.

  Example:
    >>> __getattr__, __dir__, __all__ = exports(__name__, {"Space": "space"})  # doctest: +SKIP
  """
  table = dict(names)

  def __getattr__(name: str) -> Any:  # pylint: disable=invalid-name
    module = table.get(name)
    if module is not None:
      value = getattr(importlib.import_module(f"{package}.{module}"), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
      value = importlib.import_module(f"{package}.{name}")
    else:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    # Cached on the package, so the next access is a plain attribute read.
    setattr(importlib.import_module(package), name, value)
    return value

  all_names = sorted(table)

  def __dir__() -> list[str]:  # pylint: disable=invalid-name
    return sorted(set(all_names) | set(vars(importlib.import_module(package))))

  return __getattr__, __dir__, all_names
