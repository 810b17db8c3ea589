"""Fast R-CNN (Girshick, ICCV 2015): one network, one training run, no feature cache.

- ``network``: RoI pooling over shared conv5, fc6, fc7, scores and class-specific boxes; the multi-task
  loss; truncated SVD (sections 2, 3.1);
- ``minibatches``: hierarchical sampling (2.3);
- ``finetune``: end-to-end training, data-parallel under ``torchrun`` (2.3, 4);
- ``compress``: the truncated-SVD model (3.1);
- ``detector``: the test pass (3);
- ``method``: ``FastRCNN``, the method object the shared stages ask.
"""
