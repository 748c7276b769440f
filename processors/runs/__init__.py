"""Run assembly from a trace's committed spans: the run tree, its facts and rows, and loop
detection. Pure: the deriver in `collector/runs/` feeds it and writes what it returns."""
