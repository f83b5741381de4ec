"""qlib: the reproducibility companion of Karaman et al., "Quadruplet selection methods for
deep embedding learning" (ICIP 2019). Submodules: data, model, losses, miners, metrics, train,
toy, plots, pipeline. Import them explicitly (`from qlib import miners`)."""

from .utils import seed_everything

__version__ = "0.1.0"
__all__ = ["seed_everything", "__version__"]
