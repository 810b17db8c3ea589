"""Faster R-CNN (Ren, He, Girshick, Sun, NIPS 2015): Fast R-CNN with a region proposal network on its conv5,
so that proposals cost a few convolutions instead of selective search.

- ``options``: anchors, the region proposal network's training and proposal layer, the detector's
  sampling, the two training schemes (sections 3.1 to 3.2);
- ``rpn``: anchors, anchor labels, the RPN's loss and its proposal layer (3.1);
- ``network``: the RPN and Fast R-CNN on one conv5, and its model files;
- ``minibatches``: one image a mini-batch, its objects scaled and mirrored (3.1.3);
- ``finetune``: approximate joint training and the 4-step alternating training (3.2);
- ``detector``: the test pass, proposals included (3.3);
- ``proposer``: a trained RPN as the proposals of the other methods (``rcnn propose --proposer rpn``);
- ``method``: ``FasterRCNN``, the method object the shared stages ask.
"""
