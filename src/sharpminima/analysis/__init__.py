"""What reads finished results: the paper's tables, the experiments' measurements, the panel's
verdict and its matched-loss comparison, the sensitivity report and every figure. May import
the measures, the datasets and the shared ground; never the trainer or the command line."""
