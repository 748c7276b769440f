"""agentledger's shipped data, installed as the package `agentledger_config`: the default config,
examples, Grafana provisioning, the task-type catalogue, the price book and the judge's models.

No code lives here: the marker makes the folder a regular package, so that
`importlib.resources` finds its files in a wheel, a source tree and an editable install alike
(`collector/resources.py` reads them).
"""
