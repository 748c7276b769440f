"""Package discovery for setuptools: the code packages are found, the data package is mapped.

pyproject.toml holds everything else; a `packages.find` table alone cannot add `config/` under
its installed name `agentledger_config`, so the list is built here.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["collector*", "processors*", "exporters*"]),
        "agentledger_config",
    ]
)
