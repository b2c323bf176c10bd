"""Evaluation of trained generators: an MNIST classifier and the class accuracy of conditional samples."""
