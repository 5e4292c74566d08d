"""The datasets: the one HDF5 dataset file every stage reads (dataset.py) and the converters
that write it from each source (MNIST, CIFAR and synthetic in dataset.py; Fashion-MNIST, TIMIT
from Kaldi tables or from the LDC corpus). Imports only the shared ground of the top level."""
