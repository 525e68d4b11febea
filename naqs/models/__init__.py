"""Wave-function models: the NAQS PixelCNN (with self-ensemble symmetrization) and the
small dense/CNN networks of the generalization study."""

from .pixelcnn import PixelCNN, check_magnetization
from .symmetric import SymmetricModel

__all__ = ["PixelCNN", "SymmetricModel", "check_magnetization"]
