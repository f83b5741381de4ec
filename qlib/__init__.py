"""qlib: the reproducibility companion of Karaman et al., "Quadruplet selection methods for
deep embedding learning" (ICIP 2019).

Stages, in the order data flows (docs/design.md): `data` (manifests, images), `model` (Fig. 1),
`miners` (Section 3.3), `losses` (eq. 1-6 and the Table 1 baselines), `metrics` (Recall@K, NMI),
`train` (the loop and run folders), `stats` and `table` (Table 1 over seeds), `inference`
(embed and retrieve with a trained run), `plots`, `toy` (the 2D toy of Fig. 2), `pipeline`
(notebooks 01 -> 05). Import them explicitly: `from qlib import miners`.
"""

from .utils import seed_everything

__version__ = "0.2.0"
__all__ = ["__version__", "seed_everything"]
