"""SPP-net (He et al., ECCV 2014): conv5 once an image, every window pooled by a spatial pyramid, fc layers
fine-tuned on the cached pyramids, then R-CNN's SVMs and box regressors.

- ``options``: the pyramid's levels, the window size, the feature extraction's options;
- ``pooling``: the receptive-field geometry, the window projection and spatial pyramid pooling (2.3);
- ``network``: conv5 at one or several scales, the pyramid, fc6 and fc7 (3, 4);
- ``features``: the pyramid (and fc7) of every region, cached (4);
- ``finetune``: fc6, fc7 and the scores on the cached pyramids (4.1);
- ``method``: ``SPPNet``, the method object the shared stages ask;
- the SVMs, the regressors and detection from the cache are the shared ``CachedFeatureMethod``'s.
"""
