"""sharpminima: Keskar et al. (ICLR 2017), large-batch training and sharp minima, end to end."""

__version__ = "0.1.0"
