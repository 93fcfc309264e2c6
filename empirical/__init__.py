"""The GPU pipeline for the CIFAR / ResNet unlearning protocol (spec/empirical.md). Not built yet: see the project's
open issue "Empirical core on the GPU"."""
