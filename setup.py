# All metadata lives in setup.cfg; this stub is for tools that still call setup.py.
from setuptools import setup

setup()
