"""The cached-feature half of R-CNN and SPP-net: region features cached per split (``features``), linear
SVMs (``svm``) and box regressors (``box_regression``) fitted on them."""
