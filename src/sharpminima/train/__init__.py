"""The trainer (trainer.py), with Appendix E's remedies and the large-batch methods published
since the paper as its options. Imports the datasets and the shared ground; never the measures,
which never import it either: a measurement does not need the training loop."""
