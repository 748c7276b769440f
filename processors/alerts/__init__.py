"""Alert rules and the engine that decides, from a finished run or a window of runs, which rules
fire. Pure: the alerts consumer feeds it and records what it decides."""
