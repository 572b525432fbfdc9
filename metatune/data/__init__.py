"""Meta-datasets: evaluations of a shared design on every task of a family, with provenance."""

from metatune.data.builder import FORMAT, build, design, load, safe_name
