"""Post-processing of decoded poses: person rescoring and pose non-maximum suppression."""

from posesuite.postprocess.oks_nms import oks_nms, oks_similarity
from posesuite.postprocess.rescoring import rescore

__all__ = ["oks_nms", "oks_similarity", "rescore"]
