"""R-CNN (Girshick et al., CVPR 2014): warped proposals through a fine-tuned network, linear SVMs on fc7,
box regression on pool5.

- ``finetune``: the whole network on warped windows (section 2.3);
- ``options``: the feature extraction's options;
- ``features``: pool5 and fc7 of every region, cached (section 2.2);
- ``method``: ``RCNN``, the method object the shared stages ask;
- the SVMs, the regressors and detection from the cache are the shared ``CachedFeatureMethod``'s.
"""
