"""Metric modules (torchmetrics ``Metric`` subclasses) and report builders.

- :mod:`~aras400k.metrics.segmentation`: the paper's Table 3/4 segmentation scores.
- :mod:`~aras400k.metrics.captions`, :mod:`~aras400k.metrics.clipscore`,
  :mod:`~aras400k.metrics.consistency`: caption redundancy, CLIPScore and caption/mask agreement.
- :mod:`~aras400k.metrics.composition`: class composition distributions and distances (Figure 3).
- :mod:`~aras400k.metrics.fid`: FID/KID in a pluggable feature space (segmenter or Inception).
- :mod:`~aras400k.metrics.embedding`: t-SNE/UMAP plots with silhouettes (Figure 4).
"""

from aras400k._lazy import moved_attributes
from aras400k.metrics.captions import CaptionRedundancy, caption_hashes, hash_bytes, normalize_caption
from aras400k.metrics.clipscore import CLIPScore, load_clip
from aras400k.metrics.composition import (
    CompositionComparison,
    CompositionDistribution,
    compare_compositions,
    composition_distances,
    composition_from_shards,
    dataset_composition,
    jensen_shannon_divergence,
    plot_share_distributions,
    wasserstein_from_histograms,
)
from aras400k.metrics.consistency import DEFAULT_LEXICON, CompositionConsistency, Lexicon, score_caption
from aras400k.metrics.embedding import EmbeddingResult, embed_2d, embedding_plot, pairwise_silhouettes
from aras400k.metrics.fid import (
    FeatureExtractor,
    FeatureFID,
    FeatureKID,
    IdentityFeatures,
    InceptionFeatures,
    features_from_shards,
    fid_from_features,
    kid_from_features,
)
from aras400k.metrics.segmentation import SegmentationMetrics, scores_from_confusion

__all__ = [
    "DEFAULT_LEXICON",
    "CLIPScore",
    "CaptionRedundancy",
    "CompositionComparison",
    "CompositionConsistency",
    "CompositionDistribution",
    "EmbeddingResult",
    "FeatureExtractor",
    "FeatureFID",
    "FeatureKID",
    "IdentityFeatures",
    "InceptionFeatures",
    "Lexicon",
    "SegmentationMetrics",
    "caption_hashes",
    "compare_compositions",
    "composition_distances",
    "composition_from_shards",
    "dataset_composition",
    "embed_2d",
    "embedding_plot",
    "features_from_shards",
    "fid_from_features",
    "hash_bytes",
    "jensen_shannon_divergence",
    "kid_from_features",
    "load_clip",
    "normalize_caption",
    "pairwise_silhouettes",
    "plot_share_distributions",
    "score_caption",
    "scores_from_confusion",
    "wasserstein_from_histograms",
]

#: Moved to :mod:`aras400k.models.features` (they load a model); importable from here with a
#: ``FutureWarning`` until the next release.
__getattr__ = moved_attributes(
    __name__, {"SegmenterFeatures": "aras400k.models.features", "feature_extractor": "aras400k.models.features"}
)
