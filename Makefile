# Placeholder; the foundation work fills this in.
VENV ?= .venv
PY := $(VENV)/bin/python

test:
	$(VENV)/bin/pytest
