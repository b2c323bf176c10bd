"""Evaluation of trained generators, with no download.

metrics.py         FCD, KID, classifier score, k-NN precision/recall, label accuracy (NumPy, on features/logits)
inception.py       Inception-v3 from a local weights file, for FID and IS comparable with published figures
features.py        the feature network of a dataset: architecture, fixed training procedure, checksum, data hash,
                   splits, cache (load_or_train), predict
evaluator.py       Evaluator(cfg, strategy, gan): samples on every replica, gathered features, the same metrics dict
                   on every worker; real-image features cached
classifier.py      CLI: train a dataset's feature network ahead of evaluation; prints test accuracy and checksum
class_accuracy.py  CLI: per-class label accuracy of a conditional workdir
(`gan_dist.evaluate` is the CLI evaluating a workdir's checkpoints.)
"""
