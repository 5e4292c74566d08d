"""The measures of one stored iterate or of a pair of runs: f over a whole dataset (objective.py),
Metric 2.1 (sharpness.py, with its L-BFGS-B driver), the panel's curvature and adaptive
measures, loss surfaces, the SB-LB landscape, random directions and the trajectory. Imports the
datasets and the shared ground; never the trainer."""
