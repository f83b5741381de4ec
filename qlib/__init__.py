"""qlib: the reproducibility companion of Karaman et al., "Quadruplet selection methods for
deep embedding learning" (ICIP 2019). The stages and how data flows between them: docs/design.md.
Import them explicitly: `from qlib import miners`.
"""

from .utils import seed_everything

__version__ = "0.2.0"
__all__ = ["__version__", "seed_everything"]
