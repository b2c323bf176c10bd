"""Evaluation of trained generators, with no download.

classifier.py     the feature network of a dataset (trained by gan_dist, cached; CLI prints accuracy and checksum)
metrics.py        FCD, KID, classifier score, k-NN precision/recall, label accuracy (NumPy, on features/logits)
inception.py      Inception-v3 from a local weights file, for FID and IS comparable with published figures
training.py       Evaluator: samples on every replica, gathered features, the same metrics dict on every worker
class_accuracy.py CLI: per-class label accuracy of a conditional workdir
"""
